package pg

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keel-commerce/keel/events/envelope"
)

// Notify wakes subscribers (coalesced, asynchronous). Append calls it itself.
func (s *Store) Notify() { s.notify() }

// Subscribe implements store.Store. It holds one pooled connection for
// LISTEN while it runs.
func (s *Store) Subscribe(ctx context.Context, after envelope.Position, handle func(context.Context, []envelope.Event) error) error {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	// A LISTENing connection must not go back to the pool for others.
	conn := pc.Hijack()
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return fmt.Errorf("subscribe: listen: %w", err)
	}
	const batch = 1000
	pos := after
	heldWait := s.opts.HeldPoll
	for {
		evs, held, err := s.readTail(ctx, pos, batch)
		if err != nil {
			return err
		}
		if len(evs) > 0 {
			heldWait = s.opts.HeldPoll
			if err := handle(ctx, evs); err != nil {
				return err
			}
			pos = evs[len(evs)-1].Position
			if len(evs) == batch {
				continue
			}
		}
		wait := s.opts.IdlePoll
		if held {
			wait = heldWait
			heldWait = min(2*heldWait, s.opts.HeldPollMax)
		} else {
			heldWait = s.opts.HeldPoll
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		_, err = conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err):
			return fmt.Errorf("subscribe: wait: %w", err)
		}
		// Drain notifications that piled up while reading: one read covers them.
		for {
			dctx, cancel := context.WithTimeout(ctx, 0)
			_, err := conn.WaitForNotification(dctx)
			cancel()
			if err != nil {
				break
			}
		}
	}
}

// notifySQL sends the store's NOTIFY in a transaction of its own that does
// not wait for its WAL flush: a NOTIFY holds PostgreSQL's server-wide notify
// lock until its transaction ends, so a synchronous commit there made every
// notifier of the server (each store, each read-model builder) queue behind
// one fsync after another. A notification lost to a crash costs nothing:
// subscribers poll too. No arguments: pgx sends it in the simple protocol,
// which runs both statements in one implicit transaction.
const notifySQL = "SET LOCAL synchronous_commit = off; SELECT pg_notify('" + Channel + "', '')"

// notifier sends one NOTIFY per burst of appends. A poke that arrives while
// a NOTIFY is in flight is kept (channel of one) and sent after, so the last
// append of a burst is always announced.
func (s *Store) notifier(ctx context.Context) {
	defer close(s.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.poke:
		}
		if _, err := s.pool.Exec(ctx, notifySQL); err != nil && ctx.Err() == nil {
			s.log.Warn("event store notify failed; subscribers fall back to polling", "err", err)
		}
	}
}

func (s *Store) notify() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}
