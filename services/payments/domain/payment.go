// Package domain is the payments context's Payment aggregate: a plain
// struct with no I/O whose command methods check invariants and return the
// events they decide (payments v1 protobuf messages); Apply is the only
// place state changes. Time, ids and the gateway's answers are passed in:
// the app layer calls the gateway port (package gateway) and hands its
// outcome to the aggregate, which decides what it means.
//
// # State machine
//
//	(none) --Authorize approved--> authorized
//	(none) --Authorize declined--> declined (final)
//	(none) --Authorize timed out--> unknown --Authorize (retry, same key)--> authorized | declined | unknown
//	authorized --Capture--> captured --Refund (partial, cumulative)--> captured | refunded (final once all is refunded)
//	authorized --Void--> voided (final)
//
// One capture per payment, of at most the authorized amount. Refunds are
// cumulative and never exceed what was captured; a refund id already
// applied is an idempotent no-op. Refused commands return a
// *TransitionError (wrong state) or a wrapped sentinel (bad amounts).
//
// # Idempotency keys
//
// The events do not carry the provider idempotency key, so the aggregate
// cannot remember one; instead every gateway call's key is derived from ids
// the events do carry (AuthorizeKey, CaptureKey, VoidKey, RefundKey). A
// retry after a timeout therefore reuses the same key and the provider
// never charges twice.
package domain

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
)

// Sentinel errors; wrapped with detail, test with errors.Is.
var (
	// ErrInvalid reports a command with missing or malformed fields.
	ErrInvalid = errors.New("invalid payment command")
	// ErrCurrencyMismatch reports an amount in another currency than the payment's.
	ErrCurrencyMismatch = errors.New("currency mismatch")
	// ErrExceedsAuthorized reports a capture above the authorized amount.
	ErrExceedsAuthorized = errors.New("capture exceeds authorized amount")
	// ErrExceedsCaptured reports refunds that would total more than was captured.
	ErrExceedsCaptured = errors.New("refund exceeds captured amount")
	// ErrAmountMismatch reports a retried authorization for another amount.
	ErrAmountMismatch = errors.New("retry for a different amount")
	// ErrRefundConflict reports a refund id reused with another amount.
	ErrRefundConflict = errors.New("refund id reused with a different amount")
)

// Status is where a payment is in its life; the zero value StatusNone is a
// payment not yet attempted.
type Status int

// The states of a payment; see the package comment for the transitions.
const (
	// StatusNone is a payment not attempted yet (an empty stream).
	StatusNone Status = iota
	// StatusUnknown timed out at the provider; retry Authorize or reconcile.
	StatusUnknown
	// StatusAuthorized holds funds at the provider.
	StatusAuthorized
	// StatusDeclined was refused by the provider; final.
	StatusDeclined
	// StatusCaptured took funds; refunds may follow.
	StatusCaptured
	// StatusVoided released its hold without capture; final.
	StatusVoided
	// StatusRefunded returned everything it captured; final.
	StatusRefunded
)

// String names the status as used in errors and APIs.
func (s Status) String() string {
	switch s {
	case StatusNone:
		return "none"
	case StatusUnknown:
		return "unknown"
	case StatusAuthorized:
		return "authorized"
	case StatusDeclined:
		return "declined"
	case StatusCaptured:
		return "captured"
	case StatusVoided:
		return "voided"
	case StatusRefunded:
		return "refunded"
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// TransitionError reports a command that the payment's status does not allow.
type TransitionError struct {
	// From is the payment's status when the command arrived.
	From Status
	// Action is the refused command: "authorize", "capture", "void" or "refund".
	Action string
}

func (e *TransitionError) Error() string {
	if e.From == StatusNone {
		// Not a state a client knows: the payment was never created.
		return fmt.Sprintf("cannot %s a payment that does not exist", e.Action)
	}
	return fmt.Sprintf("cannot %s a payment that is %s", e.Action, e.From)
}

// IsTransition reports whether err is (or wraps) a *TransitionError.
func IsTransition(err error) bool {
	var t *TransitionError
	return errors.As(err, &t)
}

// AuthorizeKey is the gateway idempotency key for authorizing paymentID.
func AuthorizeKey(paymentID string) string { return paymentID + "/authorize" }

// CaptureKey is the gateway idempotency key for capturing paymentID.
func CaptureKey(paymentID string) string { return paymentID + "/capture" }

// VoidKey is the gateway idempotency key for voiding paymentID.
func VoidKey(paymentID string) string { return paymentID + "/void" }

// RefundKey is the gateway idempotency key for refund refundID of paymentID.
func RefundKey(paymentID, refundID string) string { return paymentID + "/refund/" + refundID }

// Outcome is what the gateway answered to an authorization.
type Outcome int

// The outcomes Authorize understands.
const (
	// OutcomeApproved: funds are held.
	OutcomeApproved Outcome = iota + 1
	// OutcomeDeclined: the provider refused.
	OutcomeDeclined
	// OutcomeTimedOut: no answer in time; the provider may or may not have
	// acted (the ambiguous case), so the payment becomes unknown.
	OutcomeTimedOut
)

// Authorization is an authorization attempt and the gateway's answer to it.
type Authorization struct {
	// PaymentID, OrderID and CheckoutID identify the payment; CheckoutID may be empty.
	PaymentID, OrderID, CheckoutID string
	// Amount asked for, > 0.
	Amount *typesv1.Money
	// Outcome is the gateway's answer.
	Outcome Outcome
	// ProviderReference is the provider's authorization reference (approved only).
	ProviderReference string
	// ExpiresAt is when the provider drops the hold (approved only).
	ExpiresAt time.Time
	// DeclineReason and Detail say why it was declined (declined only).
	DeclineReason paymentsv1.DeclineReason
	Detail        string
	// Deadline is the deadline that passed (timed out only).
	Deadline time.Time
}

// Payment is the state of one payment folded from its events. The zero
// value (or New) is a payment not yet attempted. Not safe for concurrent use.
type Payment struct {
	id, orderID string
	status      Status
	currency    string
	authorized  int64
	captured    int64
	refunded    int64
	refunds     map[string]int64
}

// New returns a payment with no events; it fits command.Aggregate.New.
func New(string) *Payment { return &Payment{} }

// ID returns the payment id, empty before the first attempt.
func (p *Payment) ID() string { return p.id }

// Status returns where the payment is in its life.
func (p *Payment) Status() Status { return p.status }

// Captured returns the amount captured, in minor units.
func (p *Payment) Captured() int64 { return p.captured }

// Refunded returns the amount refunded so far, in minor units.
func (p *Payment) Refunded() int64 { return p.refunded }

// Apply folds one event into p and returns it; unknown events are ignored.
// It never fails: events are facts. It fits command.Aggregate.Apply.
func Apply(p *Payment, event proto.Message) *Payment {
	if p == nil {
		p = &Payment{}
	}
	switch e := event.(type) {
	case *paymentsv1.PaymentAuthorized:
		p.id, p.orderID, p.status = e.GetPaymentId(), e.GetOrderId(), StatusAuthorized
		p.currency, p.authorized = e.GetAmount().GetCurrency(), e.GetAmount().GetAmountMinor()
	case *paymentsv1.PaymentDeclined:
		p.id, p.orderID, p.status = e.GetPaymentId(), e.GetOrderId(), StatusDeclined
		p.currency, p.authorized = e.GetAmount().GetCurrency(), 0
	case *paymentsv1.PaymentAuthorizationTimedOut:
		p.id, p.orderID, p.status = e.GetPaymentId(), e.GetOrderId(), StatusUnknown
		p.currency, p.authorized = e.GetAmount().GetCurrency(), e.GetAmount().GetAmountMinor()
	case *paymentsv1.PaymentCaptured:
		p.status, p.captured = StatusCaptured, e.GetAmount().GetAmountMinor()
	case *paymentsv1.PaymentVoided:
		p.status = StatusVoided
	case *paymentsv1.PaymentRefunded:
		if p.refunds == nil {
			p.refunds = map[string]int64{}
		}
		p.refunds[e.GetRefundId()] = e.GetAmount().GetAmountMinor()
		p.refunded += e.GetAmount().GetAmountMinor()
		if p.refunded >= p.captured {
			p.status = StatusRefunded
		}
	}
	return p
}

func money(n int64, currency string) *typesv1.Money {
	return &typesv1.Money{AmountMinor: n, Currency: currency}
}

// Authorize decides the event for an authorization attempt and the
// gateway's answer: PaymentAuthorized, PaymentDeclined or
// PaymentAuthorizationTimedOut. It is allowed on a new payment and, as a
// retry with the same key and amount, on one whose earlier attempt timed out.
func (p *Payment) Authorize(a Authorization, now time.Time) ([]proto.Message, error) {
	if p.status != StatusNone && p.status != StatusUnknown {
		return nil, &TransitionError{From: p.status, Action: "authorize"}
	}
	switch {
	case a.PaymentID == "" || a.OrderID == "":
		return nil, fmt.Errorf("%w: payment and order ids are required", ErrInvalid)
	case a.Amount.GetAmountMinor() <= 0 || a.Amount.GetCurrency() == "":
		return nil, fmt.Errorf("%w: amount must be > 0 with a currency", ErrInvalid)
	}
	if p.status == StatusUnknown {
		if a.PaymentID != p.id {
			return nil, fmt.Errorf("%w: payment id %q, stream holds %q", ErrInvalid, a.PaymentID, p.id)
		}
		if a.Amount.GetCurrency() != p.currency || a.Amount.GetAmountMinor() != p.authorized {
			return nil, fmt.Errorf("%w: %d %s, first attempt %d %s", ErrAmountMismatch,
				a.Amount.GetAmountMinor(), a.Amount.GetCurrency(), p.authorized, p.currency)
		}
	}
	amount := money(a.Amount.GetAmountMinor(), a.Amount.GetCurrency())
	at := timestamppb.New(now)
	switch a.Outcome {
	case OutcomeApproved:
		if a.ProviderReference == "" {
			return nil, fmt.Errorf("%w: an approval needs the provider reference", ErrInvalid)
		}
		return []proto.Message{&paymentsv1.PaymentAuthorized{PaymentId: a.PaymentID, OrderId: a.OrderID,
			CheckoutId: a.CheckoutID, Amount: amount, ProviderReference: a.ProviderReference,
			ExpiresAt: timestamppb.New(a.ExpiresAt), AuthorizedAt: at}}, nil
	case OutcomeDeclined:
		reason := a.DeclineReason
		if reason == paymentsv1.DeclineReason_DECLINE_REASON_UNSPECIFIED {
			reason = paymentsv1.DeclineReason_DECLINE_REASON_OTHER
		}
		return []proto.Message{&paymentsv1.PaymentDeclined{PaymentId: a.PaymentID, OrderId: a.OrderID,
			CheckoutId: a.CheckoutID, Amount: amount, Reason: reason, Detail: a.Detail, DeclinedAt: at}}, nil
	case OutcomeTimedOut:
		return []proto.Message{&paymentsv1.PaymentAuthorizationTimedOut{PaymentId: a.PaymentID, OrderId: a.OrderID,
			CheckoutId: a.CheckoutID, Amount: amount, Deadline: timestamppb.New(a.Deadline), TimedOutAt: at}}, nil
	}
	return nil, fmt.Errorf("%w: outcome %d", ErrInvalid, a.Outcome)
}

// Capture decides PaymentCaptured for an authorized payment. A nil amount
// captures the whole authorization; otherwise 0 < amount ≤ authorized.
func (p *Payment) Capture(amount *typesv1.Money, now time.Time) ([]proto.Message, error) {
	if p.status != StatusAuthorized {
		return nil, &TransitionError{From: p.status, Action: "capture"}
	}
	n := p.authorized
	if amount != nil {
		if amount.GetCurrency() != p.currency {
			return nil, fmt.Errorf("%w: %q, authorized in %q", ErrCurrencyMismatch, amount.GetCurrency(), p.currency)
		}
		if n = amount.GetAmountMinor(); n <= 0 {
			return nil, fmt.Errorf("%w: capture amount must be > 0", ErrInvalid)
		}
		if n > p.authorized {
			return nil, fmt.Errorf("%w: %d > %d", ErrExceedsAuthorized, n, p.authorized)
		}
	}
	return []proto.Message{&paymentsv1.PaymentCaptured{PaymentId: p.id, OrderId: p.orderID,
		Amount: money(n, p.currency), CapturedAt: timestamppb.New(now)}}, nil
}

// Void decides PaymentVoided for an authorized, not captured, payment.
func (p *Payment) Void(reason string, now time.Time) ([]proto.Message, error) {
	if p.status != StatusAuthorized {
		return nil, &TransitionError{From: p.status, Action: "void"}
	}
	return []proto.Message{&paymentsv1.PaymentVoided{PaymentId: p.id, OrderId: p.orderID,
		Reason: reason, VoidedAt: timestamppb.New(now)}}, nil
}

// Refund decides PaymentRefunded for a captured payment. Refunds are
// cumulative and never exceed the captured amount; a refund id already
// applied with the same amount is an idempotent no-op.
func (p *Payment) Refund(refundID string, amount *typesv1.Money, reason string, now time.Time) ([]proto.Message, error) {
	if prev, ok := p.refunds[refundID]; ok && refundID != "" {
		if amount.GetAmountMinor() == prev && amount.GetCurrency() == p.currency {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: refund %s was %d", ErrRefundConflict, refundID, prev)
	}
	if p.status != StatusCaptured {
		return nil, &TransitionError{From: p.status, Action: "refund"}
	}
	if refundID == "" || amount == nil {
		return nil, fmt.Errorf("%w: refund id and amount are required", ErrInvalid)
	}
	if amount.GetCurrency() != p.currency {
		return nil, fmt.Errorf("%w: %q, captured in %q", ErrCurrencyMismatch, amount.GetCurrency(), p.currency)
	}
	n := amount.GetAmountMinor()
	if n <= 0 {
		return nil, fmt.Errorf("%w: refund amount must be > 0", ErrInvalid)
	}
	if n > p.captured-p.refunded {
		return nil, fmt.Errorf("%w: %d more after %d of %d", ErrExceedsCaptured, n, p.refunded, p.captured)
	}
	return []proto.Message{&paymentsv1.PaymentRefunded{PaymentId: p.id, RefundId: refundID, OrderId: p.orderID,
		Amount: money(n, p.currency), Reason: reason, RefundedAt: timestamppb.New(now)}}, nil
}
