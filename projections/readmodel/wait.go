package readmodel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/keel-commerce/keel/events/consistency"
)

// Waiter lets queries wait until a projection has applied a command's
// events (read-your-writes). It listens on NotifyChannel, which the live
// builders and switches notify on commit, and re-checks the applied stream
// versions when woken; a slow poll covers a lost listener connection.
type Waiter struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	mu   sync.Mutex
	wake map[string]chan struct{} // closed and replaced on each notification
}

// NewWaiter returns a Waiter on the projections database. Run it.
func NewWaiter(pool *pgxpool.Pool, log *slog.Logger) *Waiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Waiter{pool: pool, log: log, wake: map[string]chan struct{}{}}
}

// Run listens until ctx ends, reconnecting after errors.
func (w *Waiter) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		err := w.listen(ctx)
		if ctx.Err() != nil {
			break
		}
		w.log.Warn("readmodel: waiter lost its listener; retrying", "err", err)
		w.broadcast("") // wake everyone: they re-check
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (w *Waiter) listen(ctx context.Context) error {
	conn, err := w.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		return err
	}
	defer conn.Exec(context.WithoutCancel(ctx), "UNLISTEN "+NotifyChannel) //nolint:errcheck
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		w.broadcast(n.Payload)
	}
}

func (w *Waiter) signal(projection string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := w.wake[projection]
	if ch == nil {
		ch = make(chan struct{})
		w.wake[projection] = ch
	}
	return ch
}

// broadcast wakes the waiters of projection ("" wakes all).
func (w *Waiter) broadcast(projection string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for p, ch := range w.wake {
		if projection == "" || p == projection {
			close(ch)
			delete(w.wake, p)
		}
	}
}

// ErrTokenContext is returned for a token of a context the projection
// does not read.
var ErrTokenContext = errors.New("readmodel: the consistency token is of a context this read model does not read")

// BehindError says how far a projection is from a token when the wait
// ended.
type BehindError struct {
	Projection string
	Streams    map[string][2]int64 // stream → {applied, wanted}, the ones not reached
	Waited     time.Duration
}

func (e *BehindError) Error() string {
	parts := make([]string, 0, len(e.Streams))
	for s, v := range e.Streams {
		parts = append(parts, fmt.Sprintf("%s at version %d of %d", s, v[0], v[1]))
	}
	sort.Strings(parts)
	return fmt.Sprintf("read model %s has not applied the token's events after %s: %s",
		e.Projection, e.Waited.Round(time.Millisecond), strings.Join(parts, ", "))
}

// Wait returns once projection p has applied every stream of tok up to its
// version, or a *BehindError after max.
func (w *Waiter) Wait(ctx context.Context, p Projection, tok consistency.Token, max time.Duration) error {
	if tok.IsZero() {
		return nil
	}
	if !slices.Contains(p.Sources(), tok.Context) {
		return fmt.Errorf("%w: token of %s, read model %s reads %s", ErrTokenContext, tok.Context, p.Name(), strings.Join(p.Sources(), ", "))
	}
	start := time.Now()
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for {
		woken := w.signal(p.Name())
		missing, err := Missing(ctx, w.pool, p.Name(), tok)
		switch {
		case errors.Is(err, ErrNoActive):
			missing = map[string][2]int64{} // no copy yet: nothing applied
			for s, v := range tok.Streams {
				missing[s] = [2]int64{0, v}
			}
		case err != nil:
			return err
		case len(missing) == 0:
			return nil
		}
		select {
		case <-woken:
		case <-poll.C:
		case <-deadline.C:
			return &BehindError{Projection: p.Name(), Streams: missing, Waited: time.Since(start)}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Missing returns the token's streams the projection's active copy has not
// applied up to the token's version: stream → {applied, wanted}.
func Missing(ctx context.Context, q Querier, projection string, tok consistency.Token) (map[string][2]int64, error) {
	g, err := Active(ctx, q, projection)
	if err != nil {
		return nil, err
	}
	streams := make([]string, 0, len(tok.Streams))
	for s := range tok.Streams {
		streams = append(streams, s)
	}
	rows, err := q.Query(ctx, `SELECT stream_id, version FROM `+appliedStreams.qualified(g.Schema)+` WHERE stream_id = ANY($1)`, streams)
	if err != nil {
		return nil, err
	}
	have := map[string]int64{}
	var s string
	var v int64
	if _, err := pgx.ForEachRow(rows, []any{&s, &v}, func() error { have[s] = v; return nil }); err != nil {
		return nil, err
	}
	missing := map[string][2]int64{}
	for s, want := range tok.Streams {
		if have[s] < want {
			missing[s] = [2]int64{have[s], want}
		}
	}
	return missing, nil
}
