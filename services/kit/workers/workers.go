// Package workers runs the long-lived parts of a service process (HTTP
// server, Kafka consumer, relay, timer loop) side by side, and supervises
// them as systemd or Kubernetes would supervise a process: a worker that
// fails because a dependency is down (outage.Is: PostgreSQL restarting,
// a connection lost, a broker gone) is started again with a capped
// back-off while the others go on, so an outage never ends the process.
// Any other failure is a bug that must surface: it stops the others, and
// Run returns once all have.
package workers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/keel-commerce/keel/events/outage"
)

// Worker is one part of a process. Run returns when ctx ends (nil) or when
// it fails; it may be called again after it returned (a restart).
type Worker struct {
	Name string
	Run  func(context.Context) error
}

// Backoff bounds the wait before a restart: Initial after the first
// failure, doubling up to Max (each wait jittered to between half and all
// of it). A run that lasted longer than Max starts the doubling over.
type Backoff struct {
	Initial, Max time.Duration
}

// DefaultBackoff restarts within 100 ms, then waits up to 10 s: a
// PostgreSQL restart (a few seconds) is ridden out within a second or two
// of the server answering again.
var DefaultBackoff = Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second}

func (b Backoff) wait(failures int) time.Duration {
	d := b.Max
	if failures < 30 {
		d = min(b.Initial<<(failures-1), b.Max)
	}
	return d/2 + rand.N(d/2+1)
}

// Run starts every worker and waits for all of them, restarting those
// that fail for an outage with DefaultBackoff. When one returns for any
// other reason (nil before ctx ended, or a failure that is not an
// outage), the others are cancelled. Failures that end Run are logged and
// returned joined; context cancellation is not a failure.
func Run(ctx context.Context, log *slog.Logger, ws ...Worker) error {
	return RunWith(ctx, log, DefaultBackoff, ws...)
}

// RunWith is Run with another restart back-off (tests).
func RunWith(ctx context.Context, log *slog.Logger, b Backoff, ws ...Worker) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(ws))
	for _, w := range ws {
		go func() { results <- result{w.Name, supervise(ctx, log, b, w)} }()
	}
	var errs []error
	for range ws {
		r := <-results
		if r.err != nil && !errors.Is(r.err, context.Canceled) {
			log.Error("worker failed", "worker", r.name, "err", r.err)
			errs = append(errs, fmt.Errorf("%s: %w", r.name, r.err))
		}
		cancel()
	}
	return errors.Join(errs...)
}

// supervise runs w until ctx ends or it fails for something other than an
// outage, restarting it after each outage.
func supervise(ctx context.Context, log *slog.Logger, b Backoff, w Worker) error {
	failures := 0
	for {
		start := time.Now()
		err := w.Run(ctx)
		if ctx.Err() != nil || !transient(err) {
			return err
		}
		if time.Since(start) > b.Max {
			failures = 0
		}
		failures++
		wait := b.wait(failures)
		log.Warn("worker failed: a dependency is down; restarting", "worker", w.Name, "err", err,
			"failures", failures, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// transient says whether a worker's failure is one a restart may cure: a
// dependency down, or a deadline that ran out waiting for one.
func transient(err error) bool {
	return err != nil && (outage.Is(err) || errors.Is(err, context.DeadlineExceeded))
}
