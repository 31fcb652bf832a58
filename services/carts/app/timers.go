package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/services/carts/domain"
)

// Timers fires the abandon timers kept in cart_timers. The rows are written
// with the events (see the package comment), so there is no projector to
// lag or replay: a restarted worker, or a second replica, reads the same
// due rows and fires the same command ids.
type Timers struct {
	s *Service
}

// Timers returns the service's abandon timer worker.
func (s *Service) Timers() *Timers { return &Timers{s: s} }

// FireDue abandons every cart whose timer is due at the clock's now and
// returns how many it abandoned. An accepted abandon deletes its row in its
// own transaction; a refused one (the cart is no longer open at that
// version) deletes the row only if it still names that version; a cart
// that turns out not idle long enough (AbandonAfter grew since the row was
// written) is rescheduled from its last activity.
func (t *Timers) FireDue(ctx context.Context) (int, error) {
	s := t.s
	now := s.cfg.Now()
	rows, err := s.st.Pool().Query(ctx, `SELECT cart_id, version FROM cart_timers WHERE due_at <= $1 ORDER BY due_at LIMIT 1000`, now)
	if err != nil {
		return 0, fmt.Errorf("due cart timers: %w", err)
	}
	type due struct {
		id      string
		version int64
	}
	var list []due
	for rows.Next() {
		var d due
		if err := rows.Scan(&d.id, &d.version); err != nil {
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
		res, err := s.Abandon(ctx, d.id, d.version)
		switch {
		case err == nil:
			if !res.Replayed {
				fired++
			}
		case command.IsRejection(err):
			if _, err := s.st.Pool().Exec(ctx, `DELETE FROM cart_timers WHERE cart_id = $1 AND version = $2`, d.id, d.version); err != nil {
				return fired, fmt.Errorf("drop cart timer %s: %w", d.id, err)
			}
		case errors.Is(err, domain.ErrNotIdle):
			c, err := s.load(ctx, d.id)
			if err != nil {
				return fired, err
			}
			if _, err := s.st.Pool().Exec(ctx, `UPDATE cart_timers SET due_at = $3 WHERE cart_id = $1 AND version = $2`,
				d.id, d.version, c.LastActivity().Add(s.cfg.AbandonAfter)); err != nil {
				return fired, fmt.Errorf("reschedule cart timer %s: %w", d.id, err)
			}
		default:
			return fired, fmt.Errorf("abandon cart %s: %w", d.id, err)
		}
	}
	return fired, nil
}

// Run fires due timers every interval (and once at start) until ctx ends;
// a failed round is logged and retried on the next tick.
func (t *Timers) Run(ctx context.Context, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if n, err := t.FireDue(ctx); err != nil && ctx.Err() == nil {
			t.s.cfg.Logger.WarnContext(ctx, "cart timers: fire", "err", err)
		} else if n > 0 {
			t.s.cfg.Logger.InfoContext(ctx, "cart timers: abandoned idle carts", "count", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
