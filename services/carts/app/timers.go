package app

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/services/carts/domain"
	"github.com/keel-commerce/keel/services/kit/timers"
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

func (s *Service) newTimers() (*timers.Queue, error) {
	return timers.New(s.st.Pool(), timers.Config{
		Name: "cart_abandon", Table: "cart_timers", Key: []string{"cart_id"}, Data: []string{"version"},
		Fire: s.fireAbandon, Now: s.cfg.Now, Logger: s.cfg.Logger, Registerer: s.cfg.Registerer,
	})
}

// fireAbandon abandons a cart whose timer is due. An accepted abandon
// deletes its row in its own transaction; a refused one (the cart is no
// longer open at that version) deletes the row only if it still names
// that version; a cart that turns out not idle long enough (AbandonAfter
// grew since the row was written) is rescheduled from its last activity.
// Any other error leaves the row to the queue's back-off.
func (s *Service) fireAbandon(ctx context.Context, t timers.Timer) (bool, error) {
	id := t.Key[0]
	version, err := strconv.ParseInt(t.Data[0], 10, 64)
	if err != nil {
		return false, fmt.Errorf("cart timer %s: version %q: %w", id, t.Data[0], err)
	}
	res, err := s.Abandon(ctx, id, version)
	switch {
	case err == nil:
		return !res.Replayed, nil
	case command.IsRejection(err):
		if _, err := s.st.Pool().Exec(ctx, `DELETE FROM cart_timers WHERE cart_id = $1 AND version = $2`, id, version); err != nil {
			return false, fmt.Errorf("drop cart timer %s: %w", id, err)
		}
		return false, nil
	case errors.Is(err, domain.ErrNotIdle):
		c, err := s.load(ctx, id)
		if err != nil {
			return false, err
		}
		if _, err := s.st.Pool().Exec(ctx, `UPDATE cart_timers SET due_at = $3 WHERE cart_id = $1 AND version = $2`,
			id, version, c.LastActivity().Add(s.cfg.AbandonAfter)); err != nil {
			return false, fmt.Errorf("reschedule cart timer %s: %w", id, err)
		}
		return false, nil
	}
	return false, fmt.Errorf("abandon cart %s: %w", id, err)
}

// FireDue abandons every cart whose timer is due at the clock's now and
// returns how many it abandoned; a cart that fails is backed off
// (services/kit/timers) and the others carry on.
func (t *Timers) FireDue(ctx context.Context) (int, error) { return t.s.timers.FireDue(ctx) }

// Run fires due timers every interval (and once at start) until ctx ends;
// a failed round is logged and retried on the next tick.
func (t *Timers) Run(ctx context.Context, interval time.Duration) error {
	t.s.timers.Run(ctx, interval)
	return nil
}
