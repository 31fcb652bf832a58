package workers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestFirstFailureStopsTheOthers(t *testing.T) {
	boom := errors.New("boom")
	stopped := make(chan struct{})
	err := Run(context.Background(), slog.New(slog.DiscardHandler),
		Worker{"fails", func(context.Context) error { return boom }},
		Worker{"waits", func(ctx context.Context) error { <-ctx.Done(); close(stopped); return ctx.Err() }},
	)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("the waiting worker was not stopped")
	}
}

func TestCancelIsNotAFailure(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Run(ctx, slog.New(slog.DiscardHandler),
		Worker{"a", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
		Worker{"b", func(ctx context.Context) error { <-ctx.Done(); return nil }},
	)
	if err != nil {
		t.Fatalf("err = %v, want nil on cancel", err)
	}
}

// The stock timer worker's failure of issue 9 (defect 11): PostgreSQL's
// FATAL 57P01 on its subscription, then connection refused while the
// server restarts. The worker is restarted until the server is back; the
// other workers never stop.
func TestOutageRestartsTheWorker(t *testing.T) {
	var runs atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	back := make(chan struct{})
	stopped := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- RunWith(ctx, slog.New(slog.DiscardHandler), Backoff{Initial: time.Millisecond, Max: 20 * time.Millisecond},
			Worker{"timers", func(ctx context.Context) error {
				switch runs.Add(1) {
				case 1:
					return fmt.Errorf("subscribe: wait: %w", &pgconn.PgError{Severity: "FATAL", Code: "57P01",
						Message: "terminating connection due to administrator command"})
				case 2, 3, 4:
					return fmt.Errorf("checkpoint: %w", &pgconn.ConnectError{})
				}
				close(back)
				<-ctx.Done()
				return nil
			}},
			Worker{"http", func(ctx context.Context) error { <-ctx.Done(); close(stopped); return nil }},
		)
	}()
	select {
	case <-back:
	case err := <-errc:
		t.Fatalf("Run returned %v after %d runs; want the worker restarted", err, runs.Load())
	case <-time.After(10 * time.Second):
		t.Fatal("the worker was not restarted")
	}
	select {
	case <-stopped:
		t.Fatal("the other worker was stopped by an outage")
	default:
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("err = %v, want nil", err)
	}
	if n := runs.Load(); n != 5 {
		t.Fatalf("%d runs, want 5", n)
	}
}
