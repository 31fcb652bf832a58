package app

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/envelope"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
)

// TimersReader names the timer projector's checkpoint.
const TimersReader = "stock-timers"

// Timers is the durable expiry timer. A projector tails the event store
// and keeps stock_timers with one row per open reservation (from its
// StockReserved to its release, commit or expiry); a worker fires Expire
// for the rows due at the clock's now. Both survive restarts: rows and the
// checkpoint are in PostgreSQL, the projector replays from its checkpoint
// (upserts and deletes are idempotent, so replay is harmless), and Expire's
// command id is "expire-"+reservation id, so firing twice changes nothing.
type Timers struct {
	s *Service
}

// Timers returns the service's expiry timer.
func (s *Service) Timers() *Timers { return &Timers{s: s} }

// apply folds a page of events into stock_timers.
func (t *Timers) apply(ctx context.Context, evs []envelope.Event) error {
	b := &pgx.Batch{}
	for _, e := range evs {
		msg, err := t.s.reg.Decode(e.Type, e.Payload)
		if err != nil {
			continue // not a stock payload: nothing to time
		}
		switch m := msg.(type) {
		case *stockv1.StockReserved:
			b.Queue(`INSERT INTO stock_timers (reservation_id, sku, due_at) VALUES ($1, $2, $3)
ON CONFLICT (reservation_id) DO NOTHING`, m.GetReservationId(), m.GetSku(), m.GetExpiresAt().AsTime())
		case *stockv1.ReservationReleased:
			b.Queue(`DELETE FROM stock_timers WHERE reservation_id = $1`, m.GetReservationId())
		case *stockv1.ReservationCommitted:
			b.Queue(`DELETE FROM stock_timers WHERE reservation_id = $1`, m.GetReservationId())
		case *stockv1.ReservationExpired:
			b.Queue(`DELETE FROM stock_timers WHERE reservation_id = $1`, m.GetReservationId())
		}
	}
	if b.Len() > 0 {
		if err := t.s.st.Pool().SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("stock timers: %w", err)
		}
	}
	return t.s.st.SaveCheckpoint(ctx, TimersReader, evs[len(evs)-1].Position)
}

// CatchUp projects every event committed before it returns, waiting out
// transactions that hold the tail back.
func (t *Timers) CatchUp(ctx context.Context) error {
	pos, err := t.s.st.Checkpoint(ctx, TimersReader)
	if err != nil {
		return err
	}
	settled := false // the last empty read came after the tail was free
	for {
		evs, err := t.s.st.ReadAll(ctx, pos, 1000)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			if settled {
				return nil
			}
			// An empty read may be a tail held back by a transaction still
			// running somewhere on the server: wait until none is, then
			// read once more (the hold may have ended between the read and
			// the check).
			held, err := t.s.st.HeldBack(ctx, pos)
			if err != nil {
				return err
			}
			if !held {
				settled = true
				continue
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Millisecond):
			}
			continue
		}
		settled = false
		if err := t.apply(ctx, evs); err != nil {
			return err
		}
		pos = evs[len(evs)-1].Position
	}
}

// Project tails the store from the checkpoint until ctx ends.
func (t *Timers) Project(ctx context.Context) error {
	pos, err := t.s.st.Checkpoint(ctx, TimersReader)
	if err != nil {
		return err
	}
	return t.s.st.Subscribe(ctx, pos, t.apply)
}

// FireDue fires Expire for every timer due at the clock's now and returns
// how many it fired. A timer whose command was decided (accepted, or
// refused because the reservation is gone) is marked fired; one that
// failed stays due for the next round.
func (t *Timers) FireDue(ctx context.Context) (int, error) {
	now := t.s.cfg.Now()
	rows, err := t.s.st.Pool().Query(ctx, `SELECT reservation_id, sku FROM stock_timers
WHERE due_at <= $1 AND fired_at IS NULL ORDER BY due_at LIMIT 10000`, now)
	if err != nil {
		return 0, fmt.Errorf("due timers: %w", err)
	}
	type due struct{ id, sku string }
	var list []due
	for rows.Next() {
		var d due
		if err := rows.Scan(&d.id, &d.sku); err != nil {
			rows.Close()
			return 0, err
		}
		list = append(list, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	fired := 0
	for _, d := range list {
		if _, err := t.s.Expire(ctx, d.sku, d.id); err != nil && !command.IsRejection(err) {
			return fired, fmt.Errorf("expire %s: %w", d.id, err)
		}
		if _, err := t.s.st.Pool().Exec(ctx, `UPDATE stock_timers SET fired_at = $2 WHERE reservation_id = $1`, d.id, now); err != nil {
			return fired, fmt.Errorf("mark timer %s: %w", d.id, err)
		}
		fired++
	}
	return fired, nil
}

// Run projects and fires timers every interval (and once at start) until
// ctx ends.
func (t *Timers) Run(ctx context.Context, interval time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- t.Project(ctx) }()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if _, err := t.FireDue(ctx); err != nil && ctx.Err() == nil {
			t.s.log().Warn("stock timers: fire", "err", err)
		}
		select {
		case <-ctx.Done():
			<-errc
			return nil
		case err := <-errc:
			return err
		case <-tick.C:
		}
	}
}
