// Package workers runs the long-lived parts of a service process (HTTP
// server, Kafka consumer, relay, timer loop) side by side: the first to
// stop stops the others, and Run returns once all have.
package workers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// Worker is one part of a process. Run returns when ctx ends (nil) or when
// it fails.
type Worker struct {
	Name string
	Run  func(context.Context) error
}

// Run starts every worker and waits for all of them. When one returns, for
// whatever reason, the others are cancelled. Failures are logged and
// returned joined; context cancellation is not a failure.
func Run(ctx context.Context, log *slog.Logger, ws ...Worker) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(ws))
	for _, w := range ws {
		go func() { results <- result{w.Name, w.Run(ctx)} }()
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
