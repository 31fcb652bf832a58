// Package sim is the built-in payment provider: a deterministic simulator
// behind the gateway.Gateway port, for local runs, load tests and tests.
// It keeps its ledger in memory because it stands in for an external
// provider's own books; it is a test double, not a store.
//
// Determinism: a call's outcome is drawn from a generator seeded by the
// configured seed, the operation, the idempotency key and the attempt
// number for that key, so the same seed and the same sequence of calls
// give the same outcomes on every run.
//
// Idempotency: the first call with a key that the provider acts on
// (approved, or ambiguous: timed out but charged) is recorded; every retry
// with that key answers the recorded approval and never acts again. A
// declined key keeps answering its decline. A plain timeout did not act, so
// a retry is a new attempt.
package sim

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"time"

	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	"github.com/keel-commerce/keel/services/payments/gateway"
)

// Tokens that choose an authorization's outcome (see the package comment).
// TokenTimeout times out on every attempt (the provider never answers);
// TokenAmbiguous charges on the first attempt and times out, so a retry
// answers the recorded approval.
const (
	TokenApprove   = "tok_approve"
	TokenDecline   = "tok_decline"
	TokenTimeout   = "tok_timeout"
	TokenAmbiguous = "tok_ambiguous"
)

// Config tunes the simulator; the zero value approves everything at once.
// Rates are probabilities in [0, 1] whose sum must not exceed 1.
type Config struct {
	// Seed makes outcomes reproducible.
	Seed uint64
	// DeclineRate is the share of authorizations declined.
	DeclineRate float64
	// TimeoutRate is the share of calls that time out without acting.
	TimeoutRate float64
	// AmbiguousRate is the share of calls that time out after acting.
	AmbiguousRate float64
	// Latency is how long every call takes, spent in Sleep.
	Latency time.Duration
	// Sleep waits d or until ctx ends; default a timer. Tests inject one
	// that records and returns at once.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Sim is the simulated provider. Safe for concurrent use; build with New.
type Sim struct {
	cfg      Config
	mu       sync.Mutex
	attempts map[string]uint64         // key → calls seen
	done     map[string]gateway.Result // key → outcome the provider stands by
	charges  map[string]int            // key → times the provider acted
	auths    map[string]authorization  // reference → its amounts
}

type authorization struct{ amount, captured, refunded int64 }

// New validates cfg and returns a simulator.
func New(cfg Config) (*Sim, error) {
	for _, r := range []float64{cfg.DeclineRate, cfg.TimeoutRate, cfg.AmbiguousRate} {
		if r < 0 || r > 1 {
			return nil, fmt.Errorf("sim: rate %v outside [0, 1]", r)
		}
	}
	if s := cfg.DeclineRate + cfg.TimeoutRate + cfg.AmbiguousRate; s > 1 {
		return nil, fmt.Errorf("sim: rates sum to %v > 1", s)
	}
	if cfg.Latency < 0 {
		return nil, errors.New("sim: negative latency")
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	return &Sim{cfg: cfg, attempts: map[string]uint64{}, done: map[string]gateway.Result{},
		charges: map[string]int{}, auths: map[string]authorization{}}, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Charges reports how many times the provider acted on key: 0 or 1 however
// often the key was retried.
func (s *Sim) Charges(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.charges[key]
}

// Authorize holds the amount, or declines, times out or acts ambiguously.
func (s *Sim) Authorize(ctx context.Context, req gateway.AuthorizeRequest) (gateway.Result, error) {
	if req.Amount.GetAmountMinor() <= 0 {
		return gateway.Result{}, errors.New("sim: authorize needs a positive amount")
	}
	return s.call(ctx, "authorize", req.IdempotencyKey, req.Method.GetToken(), func(ref string) error {
		s.auths[ref] = authorization{amount: req.Amount.GetAmountMinor()}
		return nil
	})
}

// Capture takes at most the authorized amount of req.Reference.
func (s *Sim) Capture(ctx context.Context, req gateway.CaptureRequest) (gateway.Result, error) {
	return s.call(ctx, "capture", req.IdempotencyKey, "", func(string) error {
		a, ok := s.auths[req.Reference]
		if !ok || a.captured > 0 || req.Amount.GetAmountMinor() > a.amount {
			return fmt.Errorf("%w: capture %s", gateway.ErrUnknownReference, req.Reference)
		}
		a.captured = req.Amount.GetAmountMinor()
		s.auths[req.Reference] = a
		return nil
	})
}

// Void releases req.Reference.
func (s *Sim) Void(ctx context.Context, req gateway.VoidRequest) (gateway.Result, error) {
	return s.call(ctx, "void", req.IdempotencyKey, "", func(string) error {
		if _, ok := s.auths[req.Reference]; !ok {
			return fmt.Errorf("%w: void %s", gateway.ErrUnknownReference, req.Reference)
		}
		delete(s.auths, req.Reference)
		return nil
	})
}

// Refund returns at most the captured, not yet refunded, amount of req.Reference.
func (s *Sim) Refund(ctx context.Context, req gateway.RefundRequest) (gateway.Result, error) {
	return s.call(ctx, "refund", req.IdempotencyKey, "", func(string) error {
		a, ok := s.auths[req.Reference]
		if !ok || req.Amount.GetAmountMinor() > a.captured-a.refunded {
			return fmt.Errorf("%w: refund %s", gateway.ErrUnknownReference, req.Reference)
		}
		a.refunded += req.Amount.GetAmountMinor()
		s.auths[req.Reference] = a
		return nil
	})
}

// call draws the outcome of one call with key and, when the provider acts,
// runs act once per key. token is the payment method's token of an
// authorization (it may choose the outcome, and only an authorization can
// be declined); "" for the other operations.
func (s *Sim) call(ctx context.Context, op, key, token string, act func(ref string) error) (gateway.Result, error) {
	if key == "" {
		return gateway.Result{}, errors.New("sim: idempotency key is required")
	}
	if err := s.cfg.Sleep(ctx, s.cfg.Latency); err != nil {
		return gateway.Result{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.done[key]; ok {
		return r, nil // a retry: the provider stands by its first answer
	}
	attempt := s.attempts[key]
	s.attempts[key]++
	h := fnv.New64a()
	fmt.Fprintf(h, "%s\x00%s", op, key)
	rng := rand.New(rand.NewPCG(s.cfg.Seed, h.Sum64()+attempt))
	u := rng.Float64()
	ref := fmt.Sprintf("sim-%s-%016x", op, rng.Uint64())
	approved := gateway.Result{Status: gateway.StatusApproved, Reference: ref}
	switch drawOutcome(u, token, op == "authorize", s.cfg) {
	case gateway.StatusDeclined:
		r := gateway.Result{Status: gateway.StatusDeclined, DeclineReason: paymentsv1.DeclineReason_DECLINE_REASON_INSUFFICIENT_FUNDS, Detail: "simulated decline"}
		s.done[key] = r
		return r, nil
	case gateway.StatusTimedOut:
		return gateway.Result{Status: gateway.StatusTimedOut}, nil
	case gateway.StatusAmbiguous:
		if err := act(ref); err != nil {
			return gateway.Result{}, err
		}
		s.done[key], s.charges[key] = approved, 1
		return gateway.Result{Status: gateway.StatusAmbiguous}, nil
	}
	if err := act(ref); err != nil {
		return gateway.Result{}, err
	}
	s.done[key], s.charges[key] = approved, 1
	return approved, nil
}

// drawOutcome is the outcome of a call drawing u in [0, 1): the token's
// when it chooses one, else the band of the rates u falls in (a decline
// only where the operation can be declined).
func drawOutcome(u float64, token string, canDecline bool, cfg Config) gateway.Status {
	switch token {
	case TokenApprove:
		return gateway.StatusApproved
	case TokenDecline:
		return gateway.StatusDeclined
	case TokenTimeout:
		return gateway.StatusTimedOut
	case TokenAmbiguous:
		return gateway.StatusAmbiguous
	}
	decline := 0.0
	if canDecline {
		decline = cfg.DeclineRate
	}
	switch {
	case u < decline:
		return gateway.StatusDeclined
	case u < decline+cfg.TimeoutRate:
		return gateway.StatusTimedOut
	case u < decline+cfg.TimeoutRate+cfg.AmbiguousRate:
		return gateway.StatusAmbiguous
	}
	return gateway.StatusApproved
}

var _ gateway.Gateway = (*Sim)(nil)
