package sim_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/payments/gateway"
	"github.com/keel-commerce/keel/services/payments/gateway/sim"
)

func eur(n int64) *typesv1.Money { return &typesv1.Money{AmountMinor: n, Currency: "EUR"} }

// noSleep records the latencies asked for instead of waiting.
type noSleep struct{ slept []time.Duration }

func (n *noSleep) sleep(_ context.Context, d time.Duration) error {
	n.slept = append(n.slept, d)
	return nil
}

func newSim(t *testing.T, cfg sim.Config) *sim.Sim {
	t.Helper()
	if cfg.Sleep == nil {
		cfg.Sleep = (&noSleep{}).sleep
	}
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func auth(s *sim.Sim, key string) gateway.Result {
	r, err := s.Authorize(context.Background(), gateway.AuthorizeRequest{IdempotencyKey: key, Amount: eur(1000)})
	if err != nil {
		panic(err)
	}
	return r
}

var mixed = sim.Config{Seed: 42, DeclineRate: 0.1, TimeoutRate: 0.05, AmbiguousRate: 0.05}

func TestDeterministicBySeed(t *testing.T) {
	a, b := newSim(t, mixed), newSim(t, mixed)
	other := mixed
	other.Seed = 43
	c := newSim(t, other)
	differ := 0
	for i := range 1000 {
		k := fmt.Sprintf("k%d", i)
		ra, rb, rc := auth(a, k), auth(b, k), auth(c, k)
		if ra != rb {
			t.Fatalf("key %s: %+v vs %+v with the same seed", k, ra, rb)
		}
		if ra != rc {
			differ++
		}
	}
	if differ == 0 {
		t.Error("another seed gave the same outcomes for 1000 keys")
	}
}

func TestRatesWithinTolerance(t *testing.T) {
	cfg := sim.Config{Seed: 7, DeclineRate: 0.2, TimeoutRate: 0.1, AmbiguousRate: 0.05}
	s := newSim(t, cfg)
	const n = 10_000
	count := map[gateway.Status]int{}
	for i := range n {
		count[auth(s, fmt.Sprintf("key-%d", i)).Status]++
	}
	for st, want := range map[gateway.Status]float64{gateway.StatusDeclined: 0.2, gateway.StatusTimedOut: 0.1,
		gateway.StatusAmbiguous: 0.05, gateway.StatusApproved: 0.65} {
		got := float64(count[st]) / n
		// 4 standard deviations of a binomial proportion.
		if tol := 4 * math.Sqrt(want*(1-want)/n); math.Abs(got-want) > tol {
			t.Errorf("%v: rate %.4f, want %.2f ± %.4f", st, got, want, tol)
		}
	}
}

func TestRetryNeverChargesTwice(t *testing.T) {
	s := newSim(t, sim.Config{Seed: 1, TimeoutRate: 0.3, AmbiguousRate: 0.3})
	seen := map[gateway.Status]int{}
	for i := range 2000 {
		k := fmt.Sprintf("k%d", i)
		first := auth(s, k)
		seen[first.Status]++
		var final gateway.Result
		for range 20 {
			if final = auth(s, k); final.Status == gateway.StatusApproved {
				break
			}
		}
		if final.Status != gateway.StatusApproved {
			t.Fatalf("key %s never approved after retries: %v", k, final.Status)
		}
		if again := auth(s, k); again != final {
			t.Fatalf("key %s: retry answered %+v, first approval %+v", k, again, final)
		}
		if got := s.Charges(k); got != 1 {
			t.Fatalf("key %s (first %v): charged %d times", k, first.Status, got)
		}
	}
	if seen[gateway.StatusAmbiguous] == 0 || seen[gateway.StatusTimedOut] == 0 {
		t.Fatalf("no ambiguous or timed-out first attempts: %v", seen)
	}
}

func TestDeclineStandsAndNeverCharges(t *testing.T) {
	s := newSim(t, sim.Config{DeclineRate: 1})
	first := auth(s, "k")
	if first.Status != gateway.StatusDeclined || first.DeclineReason == 0 {
		t.Fatalf("first %+v", first)
	}
	if again := auth(s, "k"); again != first || s.Charges("k") != 0 {
		t.Fatalf("retry %+v, charges %d", again, s.Charges("k"))
	}
}

func TestLifecycleAndLatency(t *testing.T) {
	ns := &noSleep{}
	s := newSim(t, sim.Config{Latency: 250 * time.Millisecond, Sleep: ns.sleep})
	ctx := context.Background()
	a := auth(s, "a")
	if a.Status != gateway.StatusApproved || a.Reference == "" {
		t.Fatalf("authorize %+v", a)
	}
	if _, err := s.Capture(ctx, gateway.CaptureRequest{IdempotencyKey: "c", Reference: a.Reference, Amount: eur(1001)}); !errors.Is(err, gateway.ErrUnknownReference) {
		t.Fatalf("capture above authorized: %v", err)
	}
	for range 2 {
		if r, err := s.Capture(ctx, gateway.CaptureRequest{IdempotencyKey: "c", Reference: a.Reference, Amount: eur(800)}); err != nil || r.Status != gateway.StatusApproved {
			t.Fatalf("capture %+v %v", r, err)
		}
	}
	if s.Charges("c") != 1 {
		t.Errorf("capture retried: %d", s.Charges("c"))
	}
	for range 2 {
		if r, err := s.Refund(ctx, gateway.RefundRequest{IdempotencyKey: "r1", Reference: a.Reference, Amount: eur(800)}); err != nil || r.Status != gateway.StatusApproved {
			t.Fatalf("refund %+v %v", r, err)
		}
	}
	if _, err := s.Refund(ctx, gateway.RefundRequest{IdempotencyKey: "r2", Reference: a.Reference, Amount: eur(1)}); !errors.Is(err, gateway.ErrUnknownReference) {
		t.Fatalf("refund above captured: %v", err)
	}
	b := auth(s, "b")
	if r, err := s.Void(ctx, gateway.VoidRequest{IdempotencyKey: "v", Reference: b.Reference}); err != nil || r.Status != gateway.StatusApproved {
		t.Fatalf("void %+v %v", r, err)
	}
	if _, err := s.Void(ctx, gateway.VoidRequest{IdempotencyKey: "v2", Reference: b.Reference}); !errors.Is(err, gateway.ErrUnknownReference) {
		t.Fatalf("void twice with new key: %v", err)
	}
	if len(ns.slept) == 0 || ns.slept[0] != 250*time.Millisecond {
		t.Errorf("slept %v, want 250ms per call", ns.slept)
	}
	if _, err := s.Authorize(ctx, gateway.AuthorizeRequest{Amount: eur(1)}); err == nil {
		t.Error("authorize without key accepted")
	}
}

func TestConfigValidated(t *testing.T) {
	for _, cfg := range []sim.Config{{DeclineRate: -0.1}, {TimeoutRate: 1.1}, {DeclineRate: 0.6, AmbiguousRate: 0.6}, {Latency: -1}} {
		if _, err := sim.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestSleepHonoursContext(t *testing.T) {
	s, err := sim.New(sim.Config{Latency: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Authorize(ctx, gateway.AuthorizeRequest{IdempotencyKey: "k", Amount: eur(1)}); !errors.Is(err, context.Canceled) || s.Charges("k") != 0 {
		t.Fatalf("err %v charges %d", err, s.Charges("k"))
	}
}

func TestTokensChooseTheOutcome(t *testing.T) {
	// Rates that would otherwise decline everything: the token wins.
	s := newSim(t, sim.Config{Seed: 7, DeclineRate: 1})
	authWith := func(key, token string) gateway.Result {
		r, err := s.Authorize(context.Background(), gateway.AuthorizeRequest{IdempotencyKey: key, Amount: eur(1000),
			Method: &typesv1.PaymentMethod{Kind: typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_CARD, Token: token}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for i := range 50 {
		k := fmt.Sprintf("k%d", i)
		if r := authWith(k+"a", sim.TokenApprove); r.Status != gateway.StatusApproved || s.Charges(k+"a") != 1 {
			t.Fatalf("approve: %+v, charges %d", r, s.Charges(k+"a"))
		}
		if r := authWith(k+"d", sim.TokenDecline); r.Status != gateway.StatusDeclined || s.Charges(k+"d") != 0 {
			t.Fatalf("decline: %+v", r)
		}
		// A timeout token times out on every attempt and never charges.
		for range 3 {
			if r := authWith(k+"t", sim.TokenTimeout); r.Status != gateway.StatusTimedOut || s.Charges(k+"t") != 0 {
				t.Fatalf("timeout: %+v", r)
			}
		}
		// Ambiguous: charged once; the retry answers the approval.
		if r := authWith(k+"x", sim.TokenAmbiguous); r.Status != gateway.StatusAmbiguous {
			t.Fatalf("ambiguous: %+v", r)
		}
		if r := authWith(k+"x", sim.TokenAmbiguous); r.Status != gateway.StatusApproved || s.Charges(k+"x") != 1 {
			t.Fatalf("ambiguous retry: %+v, charges %d", r, s.Charges(k+"x"))
		}
	}
	// Any other token draws from the rates.
	if r := authWith("other", "tok_visa"); r.Status != gateway.StatusDeclined {
		t.Fatalf("other token: %+v", r)
	}
}
