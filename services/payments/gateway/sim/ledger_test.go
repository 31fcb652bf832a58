package sim_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/keel-commerce/keel/services/payments/gateway"
	"github.com/keel-commerce/keel/services/payments/gateway/sim"
)

// TestDurableBooksOutliveTheProcess: a second simulator on the same file
// (the payments service restarted) knows the first one's authorizations
// and recorded answers: it captures and voids them, answers a retried
// authorization with the original charge, and never charges it again.
func TestDurableBooksOutliveTheProcess(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "books.json")
	open := func() *sim.Durable {
		d, err := sim.NewDurable(sim.Config{Seed: 3}, path)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	first := open()
	a, err := first.Authorize(ctx, gateway.AuthorizeRequest{IdempotencyKey: "k1", Amount: eur(500)})
	if err != nil || a.Status != gateway.StatusApproved {
		t.Fatalf("authorize: %+v, %v", a, err)
	}
	b, err := first.Authorize(ctx, gateway.AuthorizeRequest{IdempotencyKey: "k2", Amount: eur(700)})
	if err != nil || b.Status != gateway.StatusApproved {
		t.Fatalf("authorize: %+v, %v", b, err)
	}

	second := open()
	again, err := second.Authorize(ctx, gateway.AuthorizeRequest{IdempotencyKey: "k1", Amount: eur(500)})
	if err != nil || again != a {
		t.Fatalf("retried authorization after a restart: %+v, %v; want the original %+v", again, err, a)
	}
	if r, err := second.Capture(ctx, gateway.CaptureRequest{IdempotencyKey: "c1", Reference: a.Reference, Amount: eur(500)}); err != nil || r.Status != gateway.StatusApproved {
		t.Fatalf("capture after a restart: %+v, %v", r, err)
	}
	if r, err := second.Void(ctx, gateway.VoidRequest{IdempotencyKey: "v2", Reference: b.Reference}); err != nil || r.Status != gateway.StatusApproved {
		t.Fatalf("void after a restart: %+v, %v", r, err)
	}
	// The capture is on the books too: a third start refuses to capture again.
	third := open()
	if _, err := third.Capture(ctx, gateway.CaptureRequest{IdempotencyKey: "c1-other", Reference: a.Reference, Amount: eur(500)}); !errors.Is(err, gateway.ErrUnknownReference) {
		t.Fatalf("second capture of one authorization: %v, want refused", err)
	}
	if _, err := sim.NewDurable(sim.Config{DeclineRate: 2}, path); err == nil {
		t.Fatal("invalid config accepted")
	}
}
