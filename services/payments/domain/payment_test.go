package domain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/payments/domain"
)

var (
	now      = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ts       = timestamppb.New(now)
	expires  = now.Add(7 * 24 * time.Hour)
	deadline = now.Add(-time.Second)
)

func eur(n int64) *typesv1.Money { return &typesv1.Money{AmountMinor: n, Currency: "EUR"} }

func attempt(o domain.Outcome) domain.Authorization {
	return domain.Authorization{PaymentID: "pay-1", OrderID: "ord-1", CheckoutID: "co-1", Amount: eur(1000),
		Outcome: o, ProviderReference: "ref-1", ExpiresAt: expires,
		DeclineReason: paymentsv1.DeclineReason_DECLINE_REASON_EXPIRED, Detail: "expired", Deadline: deadline}
}

var (
	authorized = &paymentsv1.PaymentAuthorized{PaymentId: "pay-1", OrderId: "ord-1", CheckoutId: "co-1", Amount: eur(1000),
		ProviderReference: "ref-1", ExpiresAt: timestamppb.New(expires), AuthorizedAt: ts}
	declined = &paymentsv1.PaymentDeclined{PaymentId: "pay-1", OrderId: "ord-1", CheckoutId: "co-1", Amount: eur(1000),
		Reason: paymentsv1.DeclineReason_DECLINE_REASON_EXPIRED, Detail: "expired", DeclinedAt: ts}
	timedOut = &paymentsv1.PaymentAuthorizationTimedOut{PaymentId: "pay-1", OrderId: "ord-1", CheckoutId: "co-1", Amount: eur(1000),
		Deadline: timestamppb.New(deadline), TimedOutAt: ts}
	captured = &paymentsv1.PaymentCaptured{PaymentId: "pay-1", OrderId: "ord-1", Amount: eur(800), CapturedAt: ts}
	voided   = &paymentsv1.PaymentVoided{PaymentId: "pay-1", OrderId: "ord-1", Reason: "out of stock", VoidedAt: ts}
)

func refunded(id string, n int64) *paymentsv1.PaymentRefunded {
	return &paymentsv1.PaymentRefunded{PaymentId: "pay-1", RefundId: id, OrderId: "ord-1", Amount: eur(n), Reason: "r", RefundedAt: ts}
}

type command func(p *domain.Payment) ([]proto.Message, error)

func authorize(a domain.Authorization) command {
	return func(p *domain.Payment) ([]proto.Message, error) { return p.Authorize(a, now) }
}
func capture(m *typesv1.Money) command {
	return func(p *domain.Payment) ([]proto.Message, error) { return p.Capture(m, now) }
}
func void(p *domain.Payment) ([]proto.Message, error) { return p.Void("out of stock", now) }
func refund(id string, m *typesv1.Money) command {
	return func(p *domain.Payment) ([]proto.Message, error) { return p.Refund(id, m, "r", now) }
}

func TestPayment(t *testing.T) {
	all := &paymentsv1.PaymentCaptured{PaymentId: "pay-1", OrderId: "ord-1", Amount: eur(1000), CapturedAt: ts}
	noReason := attempt(domain.OutcomeDeclined)
	noReason.DeclineReason = paymentsv1.DeclineReason_DECLINE_REASON_UNSPECIFIED
	otherReason := proto.Clone(declined).(*paymentsv1.PaymentDeclined)
	otherReason.Reason = paymentsv1.DeclineReason_DECLINE_REASON_OTHER
	noRef := attempt(domain.OutcomeApproved)
	noRef.ProviderReference = ""
	zero := attempt(domain.OutcomeApproved)
	zero.Amount = eur(0)
	noOrder := attempt(domain.OutcomeApproved)
	noOrder.OrderID = ""
	otherAmount := attempt(domain.OutcomeApproved)
	otherAmount.Amount = eur(999)
	otherID := attempt(domain.OutcomeApproved)
	otherID.PaymentID = "pay-2"
	usd := &typesv1.Money{AmountMinor: 1, Currency: "USD"}

	tests := []struct {
		name       string
		given      []proto.Message
		cmd        command
		want       []proto.Message
		err        error
		transition bool
	}{
		{name: "authorize approved", cmd: authorize(attempt(domain.OutcomeApproved)), want: []proto.Message{authorized}},
		{name: "authorize declined", cmd: authorize(attempt(domain.OutcomeDeclined)), want: []proto.Message{declined}},
		{name: "authorize declined without reason", cmd: authorize(noReason), want: []proto.Message{otherReason}},
		{name: "authorize timed out", cmd: authorize(attempt(domain.OutcomeTimedOut)), want: []proto.Message{timedOut}},
		{name: "authorize retry after timeout", given: []proto.Message{timedOut}, cmd: authorize(attempt(domain.OutcomeApproved)), want: []proto.Message{authorized}},
		{name: "authorize retry times out again", given: []proto.Message{timedOut}, cmd: authorize(attempt(domain.OutcomeTimedOut)), want: []proto.Message{timedOut}},
		{name: "authorize retry other amount", given: []proto.Message{timedOut}, cmd: authorize(otherAmount), err: domain.ErrAmountMismatch},
		{name: "authorize retry other payment", given: []proto.Message{timedOut}, cmd: authorize(otherID), err: domain.ErrInvalid},
		{name: "authorize without reference", cmd: authorize(noRef), err: domain.ErrInvalid},
		{name: "authorize zero amount", cmd: authorize(zero), err: domain.ErrInvalid},
		{name: "authorize without order", cmd: authorize(noOrder), err: domain.ErrInvalid},
		{name: "authorize unknown outcome", cmd: authorize(attempt(0)), err: domain.ErrInvalid},
		{name: "authorize authorized", given: []proto.Message{authorized}, cmd: authorize(attempt(domain.OutcomeApproved)), transition: true},
		{name: "authorize declined payment", given: []proto.Message{declined}, cmd: authorize(attempt(domain.OutcomeApproved)), transition: true},
		{name: "authorize captured", given: []proto.Message{authorized, captured}, cmd: authorize(attempt(domain.OutcomeApproved)), transition: true},
		{name: "authorize voided", given: []proto.Message{authorized, voided}, cmd: authorize(attempt(domain.OutcomeApproved)), transition: true},

		{name: "capture part", given: []proto.Message{authorized}, cmd: capture(eur(800)), want: []proto.Message{captured}},
		{name: "capture all by default", given: []proto.Message{authorized}, cmd: capture(nil), want: []proto.Message{all}},
		{name: "capture more than authorized", given: []proto.Message{authorized}, cmd: capture(eur(1001)), err: domain.ErrExceedsAuthorized},
		{name: "capture zero", given: []proto.Message{authorized}, cmd: capture(eur(0)), err: domain.ErrInvalid},
		{name: "capture other currency", given: []proto.Message{authorized}, cmd: capture(usd), err: domain.ErrCurrencyMismatch},
		{name: "capture new", cmd: capture(nil), transition: true},
		{name: "capture unknown", given: []proto.Message{timedOut}, cmd: capture(nil), transition: true},
		{name: "capture declined", given: []proto.Message{declined}, cmd: capture(nil), transition: true},
		{name: "capture captured", given: []proto.Message{authorized, captured}, cmd: capture(nil), transition: true},
		{name: "capture voided", given: []proto.Message{authorized, voided}, cmd: capture(nil), transition: true},

		{name: "void authorized", given: []proto.Message{authorized}, cmd: void, want: []proto.Message{voided}},
		{name: "void new", cmd: void, transition: true},
		{name: "void unknown", given: []proto.Message{timedOut}, cmd: void, transition: true},
		{name: "void declined", given: []proto.Message{declined}, cmd: void, transition: true},
		{name: "void captured", given: []proto.Message{authorized, captured}, cmd: void, transition: true},
		{name: "void voided", given: []proto.Message{authorized, voided}, cmd: void, transition: true},

		{name: "refund part", given: []proto.Message{authorized, captured}, cmd: refund("r1", eur(300)), want: []proto.Message{refunded("r1", 300)}},
		{name: "refund rest", given: []proto.Message{authorized, captured, refunded("r1", 300)}, cmd: refund("r2", eur(500)), want: []proto.Message{refunded("r2", 500)}},
		{name: "refund same id again is a no-op", given: []proto.Message{authorized, captured, refunded("r1", 300)}, cmd: refund("r1", eur(300))},
		{name: "refund same id after full refund is a no-op", given: []proto.Message{authorized, captured, refunded("r1", 800)}, cmd: refund("r1", eur(800))},
		{name: "refund same id other amount", given: []proto.Message{authorized, captured, refunded("r1", 300)}, cmd: refund("r1", eur(301)), err: domain.ErrRefundConflict},
		{name: "refund cumulative above captured", given: []proto.Message{authorized, captured, refunded("r1", 300)}, cmd: refund("r2", eur(501)), err: domain.ErrExceedsCaptured},
		{name: "refund above captured", given: []proto.Message{authorized, captured}, cmd: refund("r1", eur(801)), err: domain.ErrExceedsCaptured},
		{name: "refund zero", given: []proto.Message{authorized, captured}, cmd: refund("r1", eur(0)), err: domain.ErrInvalid},
		{name: "refund without id", given: []proto.Message{authorized, captured}, cmd: refund("", eur(1)), err: domain.ErrInvalid},
		{name: "refund other currency", given: []proto.Message{authorized, captured}, cmd: refund("r1", usd), err: domain.ErrCurrencyMismatch},
		{name: "refund fully refunded", given: []proto.Message{authorized, captured, refunded("r1", 800)}, cmd: refund("r2", eur(1)), transition: true},
		{name: "refund new", cmd: refund("r1", eur(1)), transition: true},
		{name: "refund unknown", given: []proto.Message{timedOut}, cmd: refund("r1", eur(1)), transition: true},
		{name: "refund declined", given: []proto.Message{declined}, cmd: refund("r1", eur(1)), transition: true},
		{name: "refund authorized", given: []proto.Message{authorized}, cmd: refund("r1", eur(1)), transition: true},
		{name: "refund voided", given: []proto.Message{authorized, voided}, cmd: refund("r1", eur(1)), transition: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := domain.New("payments-x")
			for _, e := range tt.given {
				p = domain.Apply(p, e)
			}
			got, err := tt.cmd(p)
			if tt.err != nil && !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if domain.IsTransition(err) != tt.transition {
				t.Fatalf("IsTransition(%v) = %v, want %v", err, !tt.transition, tt.transition)
			}
			if tt.err == nil && !tt.transition && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplyFoldsState(t *testing.T) {
	p := domain.New("")
	for _, e := range []proto.Message{authorized, captured, refunded("r1", 300)} {
		p = domain.Apply(p, e)
	}
	if p.Status() != domain.StatusCaptured || p.Captured() != 800 || p.Refunded() != 300 || p.ID() != "pay-1" {
		t.Fatalf("status %v captured %d refunded %d id %q", p.Status(), p.Captured(), p.Refunded(), p.ID())
	}
	if p = domain.Apply(p, refunded("r2", 500)); p.Status() != domain.StatusRefunded {
		t.Errorf("after full refund: %v", p.Status())
	}
	if got := domain.Apply(nil, declined).Status(); got != domain.StatusDeclined {
		t.Errorf("Apply(nil, declined) = %v", got)
	}
}

func TestKeys(t *testing.T) {
	keys := []string{domain.AuthorizeKey("p"), domain.CaptureKey("p"), domain.VoidKey("p"), domain.RefundKey("p", "r1"), domain.RefundKey("p", "r2")}
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			t.Errorf("key %q derived twice", k)
		}
		seen[k] = true
	}
	if s := (&domain.TransitionError{From: domain.StatusVoided, Action: "capture"}).Error(); s != "cannot capture a payment that is voided" {
		t.Errorf("Error() = %q", s)
	}
	if s := (&domain.TransitionError{From: domain.StatusNone, Action: "capture"}).Error(); s != "cannot capture a payment that does not exist" {
		t.Errorf("Error() = %q", s)
	}
}
