// Package gateway is the payments context's port to a payment provider:
// authorize, capture, void and refund, each carrying an idempotency key so
// that a retry never charges twice. Adapters (the built-in simulator in
// gateway/sim, later a real provider) implement Gateway; the app layer
// turns a Result into a domain command.
package gateway

import (
	"context"
	"errors"
	"fmt"

	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
)

// ErrUnknownReference reports a capture, void or refund of an authorization
// the provider does not know; it is a bug or a mismatched provider, never
// a business outcome.
var ErrUnknownReference = errors.New("unknown provider reference")

// Status is the kind of answer a provider gave.
type Status int

// The answers a gateway call can have.
const (
	// StatusApproved: the provider did it; Result.Reference identifies it.
	StatusApproved Status = iota + 1
	// StatusDeclined: the provider refused; Result.DeclineReason says why.
	StatusDeclined
	// StatusTimedOut: no answer in time, and the provider did not act.
	StatusTimedOut
	// StatusAmbiguous: no answer in time, but the provider did act (it
	// charged). A caller cannot tell this from StatusTimedOut in real life
	// and must treat both alike: retry with the same key, which answers
	// with the original outcome and never acts twice. The simulator reports
	// it separately so tests can assert on it.
	StatusAmbiguous
)

// String names the status.
func (s Status) String() string {
	switch s {
	case StatusApproved:
		return "approved"
	case StatusDeclined:
		return "declined"
	case StatusTimedOut:
		return "timed out"
	case StatusAmbiguous:
		return "ambiguous"
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// Result is a provider's answer to one call.
type Result struct {
	// Status is the kind of answer.
	Status Status
	// Reference is the provider's id of the authorization (or of the
	// capture, void or refund); set when approved.
	Reference string
	// DeclineReason and Detail say why it was declined.
	DeclineReason paymentsv1.DeclineReason
	Detail        string
}

// AuthorizeRequest asks to hold Amount on Method.
type AuthorizeRequest struct {
	// IdempotencyKey makes retries safe: the same key is acted on once.
	IdempotencyKey string
	Amount         *typesv1.Money
	Method         *typesv1.PaymentMethod
}

// CaptureRequest asks to take Amount of the authorization Reference.
type CaptureRequest struct {
	// IdempotencyKey makes retries safe: the same key is acted on once.
	IdempotencyKey string
	Reference      string
	Amount         *typesv1.Money
}

// VoidRequest asks to release the authorization Reference.
type VoidRequest struct {
	// IdempotencyKey makes retries safe: the same key is acted on once.
	IdempotencyKey string
	Reference      string
}

// RefundRequest asks to return Amount of the captured authorization Reference.
type RefundRequest struct {
	// IdempotencyKey makes retries safe: the same key is acted on once.
	IdempotencyKey string
	Reference      string
	Amount         *typesv1.Money
}

// Gateway is a payment provider. Implementations are safe for concurrent
// use. A business outcome (declined, timed out) is a Result, not an error;
// an error means the call was malformed or could not be made at all (the
// context ended before it was sent), and nothing was done.
type Gateway interface {
	Authorize(ctx context.Context, req AuthorizeRequest) (Result, error)
	Capture(ctx context.Context, req CaptureRequest) (Result, error)
	Void(ctx context.Context, req VoidRequest) (Result, error)
	Refund(ctx context.Context, req RefundRequest) (Result, error)
}
