package workers

import (
	"context"
	"errors"
	"log/slog"
	"testing"
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
