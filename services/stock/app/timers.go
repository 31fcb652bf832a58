package app

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/envelope"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/services/kit/timers"
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

func (s *Service) newTimers() (*timers.Queue, error) {
	return timers.New(s.st.Pool(), timers.Config{
		Name: "stock_expiry", Table: "stock_timers", Key: []string{"reservation_id"}, Data: []string{"sku"},
		Where: "fired_at IS NULL", Fire: s.fireExpiry, Batch: 10000,
		Now: s.cfg.Now, Logger: s.log(), Registerer: s.cfg.Registerer,
	})
}

// fireExpiry fires Expire for a due timer. A timer whose command was
// decided (accepted, or refused because the reservation is gone) is marked
// fired; one that failed is left to the queue's back-off.
func (s *Service) fireExpiry(ctx context.Context, t timers.Timer) (bool, error) {
	id, sku := t.Key[0], t.Data[0]
	if _, err := s.Expire(ctx, sku, id); err != nil && !command.IsRejection(err) {
		return false, fmt.Errorf("expire %s: %w", id, err)
	}
	if _, err := s.st.Pool().Exec(ctx, `UPDATE stock_timers SET fired_at = $2 WHERE reservation_id = $1`, id, s.cfg.Now()); err != nil {
		return false, fmt.Errorf("mark timer %s: %w", id, err)
	}
	return true, nil
}

// FireDue fires Expire for every timer due at the clock's now and returns
// how many it fired; a failing one is backed off (services/kit/timers) and
// the others carry on.
func (t *Timers) FireDue(ctx context.Context) (int, error) { return t.s.timers.FireDue(ctx) }

// Run projects, and fires timers every interval (and once at start), until
// ctx ends.
func (t *Timers) Run(parent context.Context, interval time.Duration) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	fired := make(chan struct{})
	go func() {
		defer close(fired)
		t.s.timers.Run(ctx, interval)
	}()
	err := t.Project(ctx)
	cancel()
	<-fired
	if parent.Err() != nil {
		return nil
	}
	return err
}
