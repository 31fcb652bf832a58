// Package app runs the payments service's commands: authorize, capture,
// void and refund through the gateway port, recorded as events through
// events/command, one stream per payment ("payment-<payment id>").
//
// # Two commands per request, the gateway call between them
//
// A provider call is slow and must never run inside a database
// transaction, yet its outcome must be recorded exactly once. Every command
// therefore runs in three steps:
//
//  1. intent: command id C decides on the aggregate whether the request is
//     allowed and what to ask the provider (idempotency key, provider
//     reference, amount). It appends nothing; the intent is stored as the
//     command's response, so a retry of C asks the provider the same thing.
//  2. the gateway call, outside any transaction, with an idempotency key
//     derived from ids (domain.AuthorizeKey etc.), never from C: however
//     often and under whatever command id a request is retried, the
//     provider acts at most once.
//  3. outcome: command id C+":outcome" decides the event from the
//     provider's answer and appends it, once.
//
// A crash between 2 and 3 is healed by a retry of C: the provider answers
// the recorded result for the same key and step 3 records it. Within one
// process the three steps of one payment run one at a time (a striped
// lock), so two concurrent requests cannot both pass step 1 on the same
// state; across processes the provider's idempotency and step 3's decision
// against the locked stream still keep the books right.
//
// # Timeouts
//
// An authorization that times out (or answers ambiguously: timed out, but
// charged) is recorded as PaymentAuthorizationTimedOut and the payment is
// unknown; Authorize again for the same payment and amount (a new command
// id) asks the provider again with the same key, which answers the
// original charge if there was one: one charge, however many retries. A
// capture, void or refund that times out records nothing and fails with
// ErrGatewayTimeout; retrying the same command id completes it.
package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/command"
	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	"github.com/keel-commerce/keel/events/store/pg"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/payments/domain"
	"github.com/keel-commerce/keel/services/payments/gateway"
)

// Sentinel errors of the app layer; HTTP maps them at the edge.
var (
	// ErrInvalid marks a command refused before anything was stored.
	ErrInvalid = errors.New("invalid command")
	// ErrNotFound reports a command or query for a payment never attempted.
	// Nothing is stored.
	ErrNotFound = errors.New("payment not found")
	// ErrGatewayTimeout reports a capture, void or refund the provider did
	// not answer in time. Nothing is recorded; retry the same command id.
	ErrGatewayTimeout = errors.New("payment provider timed out")
	// ErrGateway reports a provider call that could not be made or was
	// refused as malformed. Nothing is recorded; retry the same command id.
	ErrGateway = errors.New("payment provider failed")
)

// Rejection codes stored with refused commands (command.Rejection.Code).
const (
	CodeIllegalTransition = "illegal_transition"
	CodeCurrencyMismatch  = "currency_mismatch"
	CodeExceedsAuthorized = "exceeds_authorized"
	CodeExceedsCaptured   = "exceeds_captured"
	CodeAmountMismatch    = "amount_mismatch"
	CodeRefundConflict    = "refund_conflict"
	CodeGatewayDeclined   = "gateway_declined"
	CodeInvalid           = "invalid"
)

// Code is the rejection code of a domain error.
func Code(err error) string {
	switch {
	case domain.IsTransition(err):
		return CodeIllegalTransition
	case errors.Is(err, domain.ErrCurrencyMismatch):
		return CodeCurrencyMismatch
	case errors.Is(err, domain.ErrExceedsAuthorized):
		return CodeExceedsAuthorized
	case errors.Is(err, domain.ErrExceedsCaptured):
		return CodeExceedsCaptured
	case errors.Is(err, domain.ErrAmountMismatch):
		return CodeAmountMismatch
	case errors.Is(err, domain.ErrRefundConflict):
		return CodeRefundConflict
	}
	return CodeInvalid
}

// StreamPrefix starts every payment stream's id.
const StreamPrefix = "payment-"

// Stream is the stream id of a payment.
func Stream(paymentID string) string { return StreamPrefix + paymentID }

// State is a payment folded from its events: the domain aggregate plus
// what the gateway needs and the aggregate does not keep.
type State struct {
	*domain.Payment
	// Reference is the provider's authorization reference.
	Reference string
	OrderID   string
	// Amount is the amount asked for at authorization.
	Amount        *typesv1.Money
	DeclineReason paymentsv1.DeclineReason
	Version       int64
}

// Aggregate wires State into the command handler.
func Aggregate() command.Aggregate[*State] {
	return command.Aggregate[*State]{
		New:   func(string) *State { return &State{Payment: domain.New("")} },
		Apply: apply,
	}
}

func apply(s *State, e proto.Message) *State {
	s.Payment = domain.Apply(s.Payment, e)
	switch e := e.(type) {
	case *paymentsv1.PaymentAuthorized:
		s.Reference, s.OrderID, s.Amount = e.GetProviderReference(), e.GetOrderId(), e.GetAmount()
	case *paymentsv1.PaymentDeclined:
		s.OrderID, s.Amount, s.DeclineReason = e.GetOrderId(), e.GetAmount(), e.GetReason()
	case *paymentsv1.PaymentAuthorizationTimedOut:
		s.OrderID, s.Amount = e.GetOrderId(), e.GetAmount()
	}
	return s
}

// Registry returns the payments context's payload registry.
func Registry() (*codec.Registry, error) {
	return codec.NewRegistry(paymentsv1.File_keel_payments_v1_payments_proto)
}

// Config is the service's behaviour.
type Config struct {
	// Gateway is the payment provider (required).
	Gateway gateway.Gateway
	// GatewayTimeout bounds one provider call (default 10s); running out is
	// treated as the provider timing out.
	GatewayTimeout time.Duration
	// AuthorizationTTL is how long a provider holds an authorization
	// (default 7 days), recorded as PaymentAuthorized.expires_at.
	AuthorizationTTL time.Duration
	// Now is the clock; default time.Now.
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Service executes payment commands. Safe for concurrent use.
type Service struct {
	st    *pg.Store
	reg   *codec.Registry
	h     *command.Handler[*State]
	cfg   Config
	locks [64]chan struct{}
}

// New builds the command handler (and its tables) on st.
func New(ctx context.Context, st *pg.Store, cfg Config) (*Service, error) {
	if cfg.Gateway == nil {
		return nil, errors.New("payments: a gateway is required")
	}
	if cfg.GatewayTimeout <= 0 {
		cfg.GatewayTimeout = 10 * time.Second
	}
	if cfg.AuthorizationTTL <= 0 {
		cfg.AuthorizationTTL = 7 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	reg, err := Registry()
	if err != nil {
		return nil, err
	}
	h, err := command.New(ctx, st, reg, Aggregate(), command.Options{Name: "payments", Logger: cfg.Logger, Registerer: cfg.Registerer})
	if err != nil {
		return nil, err
	}
	s := &Service{st: st, reg: reg, h: h, cfg: cfg}
	for i := range s.locks {
		s.locks[i] = make(chan struct{}, 1)
	}
	return s, nil
}

// Close refuses new commands and waits for the accepted ones.
func (s *Service) Close() { s.h.Close() }

// Pool is the database the service writes to (for its adapters and tests).
func (s *Service) Pool() *pgxpool.Pool { return s.st.Pool() }

// lock serializes the steps of one payment's commands in this process.
func (s *Service) lock(ctx context.Context, paymentID string) (func(), error) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(paymentID))
	l := s.locks[h.Sum32()%uint32(len(s.locks))]
	select {
	case l <- struct{}{}:
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Money is an amount in minor units of an ISO 4217 currency.
type Money struct {
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
}

// View is a payment as the API shows it: the receipt of a command and the
// answer of GET /payments/{id}.
type View struct {
	PaymentID         string `json:"payment_id"`
	OrderID           string `json:"order_id"`
	Status            string `json:"status"`
	Amount            *Money `json:"amount"`
	CapturedMinor     int64  `json:"captured_minor"`
	RefundedMinor     int64  `json:"refunded_minor"`
	ProviderReference string `json:"provider_reference,omitempty"`
	DeclineReason     string `json:"decline_reason,omitempty"`
	// Version is the payment stream's version (GET only).
	Version int64 `json:"version,omitempty"`
}

func view(st *State) View {
	v := View{PaymentID: st.ID(), OrderID: st.OrderID, Status: st.Status().String(),
		CapturedMinor: st.Captured(), RefundedMinor: st.Refunded(), ProviderReference: st.Reference}
	if st.Amount != nil {
		v.Amount = &Money{AmountMinor: st.Amount.GetAmountMinor(), Currency: st.Amount.GetCurrency()}
	}
	if st.Status() == domain.StatusDeclined {
		v.DeclineReason = codec.EnumName(st.DeclineReason)
	}
	return v
}

// viewAfter is v once evs are applied. It works on the view, not the
// state: Decide must not modify the handler's state, and the aggregate
// cannot be copied deeply from outside its package.
func viewAfter(v View, evs []proto.Message) View {
	m := func(x *typesv1.Money) *Money {
		return &Money{AmountMinor: x.GetAmountMinor(), Currency: x.GetCurrency()}
	}
	for _, e := range evs {
		switch e := e.(type) {
		case *paymentsv1.PaymentAuthorized:
			v.PaymentID, v.OrderID, v.Status = e.GetPaymentId(), e.GetOrderId(), domain.StatusAuthorized.String()
			v.Amount, v.ProviderReference, v.DeclineReason = m(e.GetAmount()), e.GetProviderReference(), ""
		case *paymentsv1.PaymentDeclined:
			v.PaymentID, v.OrderID, v.Status = e.GetPaymentId(), e.GetOrderId(), domain.StatusDeclined.String()
			v.Amount, v.DeclineReason = m(e.GetAmount()), codec.EnumName(e.GetReason())
		case *paymentsv1.PaymentAuthorizationTimedOut:
			v.PaymentID, v.OrderID, v.Status = e.GetPaymentId(), e.GetOrderId(), domain.StatusUnknown.String()
			v.Amount = m(e.GetAmount())
		case *paymentsv1.PaymentCaptured:
			v.Status, v.CapturedMinor = domain.StatusCaptured.String(), e.GetAmount().GetAmountMinor()
		case *paymentsv1.PaymentVoided:
			v.Status = domain.StatusVoided.String()
		case *paymentsv1.PaymentRefunded:
			v.RefundedMinor += e.GetAmount().GetAmountMinor()
			if v.RefundedMinor >= v.CapturedMinor {
				v.Status = domain.StatusRefunded.String()
			}
		}
	}
	return v
}

// intent is what step 1 decided to ask the provider.
type intent struct {
	Key       string         `json:"key"`
	Reference string         `json:"reference,omitempty"`
	Amount    *typesv1.Money `json:"amount,omitempty"`
	// Noop: the command is already applied (a refund id seen before); no call.
	Noop bool `json:"noop,omitempty"`
}

// run executes the three steps for payment id: plan decides the intent on
// the state (an error refuses the command), call asks the gateway, record
// decides the outcome events from the state, the intent and the answer.
// c as asked, on paymentID, is the fingerprint of both steps' commands.
func (s *Service) run(ctx context.Context, c proto.Message, cmdID, paymentID string, mustExist bool,
	plan func(st *State) (intent, error),
	call func(ctx context.Context, in intent) (gateway.Result, error),
	record func(st *State, in intent, r gateway.Result) ([]proto.Message, error)) (command.Result, error) {
	switch {
	case cmdID == "":
		return command.Result{}, fmt.Errorf("%w: command id is required", ErrInvalid)
	case paymentID == "":
		return command.Result{}, fmt.Errorf("%w: payment id is required", ErrInvalid)
	}
	// A client hanging up must not strand a charge without its event.
	ctx = context.WithoutCancel(ctx)
	unlock, err := s.lock(ctx, paymentID)
	if err != nil {
		return command.Result{}, err
	}
	defer unlock()
	stream := Stream(paymentID)
	fp := command.Fingerprint{Kind: string(c.ProtoReflect().Descriptor().Name()), Target: paymentID, Input: c}
	res, err := s.h.Execute(ctx, command.Command[*State]{ID: cmdID, Streams: []string{stream}, Fingerprint: fp,
		Decide: func(states map[string]*State) (command.Decision, error) {
			st := states[stream]
			if mustExist && st.Status() == domain.StatusNone {
				return command.Decision{}, fmt.Errorf("payment %s: %w", paymentID, ErrNotFound)
			}
			in, err := plan(st)
			if err != nil {
				return command.Decision{}, command.Reject(Code(err), err)
			}
			b, err := json.Marshal(in)
			return command.Decision{Response: b}, err
		}})
	if err != nil {
		return command.Result{}, err
	}
	var in intent
	if err := json.Unmarshal(res.Response, &in); err != nil {
		return command.Result{}, fmt.Errorf("payment %s: intent of %s: %w", paymentID, cmdID, err)
	}
	var answer gateway.Result
	if !in.Noop {
		gctx, cancel := context.WithTimeout(ctx, s.cfg.GatewayTimeout)
		answer, err = call(gctx, in)
		cancel()
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			answer, err = gateway.Result{Status: gateway.StatusTimedOut}, nil
		case err != nil:
			return command.Result{}, fmt.Errorf("payment %s: %w: %w", paymentID, ErrGateway, err)
		}
	}
	fp.Kind += ":outcome"
	return s.h.Execute(ctx, command.Command[*State]{ID: cmdID + ":outcome", Streams: []string{stream}, Fingerprint: fp,
		Decide: func(states map[string]*State) (command.Decision, error) {
			st := states[stream]
			evs, err := record(st, in, answer)
			if err != nil {
				if errors.Is(err, ErrGatewayTimeout) {
					return command.Decision{}, err // not stored: the same command id completes it
				}
				var rej *command.Rejection
				if errors.As(err, &rej) {
					return command.Decision{}, err
				}
				return command.Decision{}, command.Reject(Code(err), err)
			}
			b, err := json.Marshal(viewAfter(view(st), evs))
			return command.Decision{Events: map[string][]proto.Message{stream: evs}, Response: b}, err
		}})
}

// Authorize runs AuthorizePayment: hold the amount at the provider and
// record PaymentAuthorized, PaymentDeclined or PaymentAuthorizationTimedOut.
// A declined or timed-out authorization is an accepted command whose View
// says so.
func (s *Service) Authorize(ctx context.Context, c *paymentsv1.AuthorizePayment) (command.Result, error) {
	now := s.cfg.Now()
	auth := domain.Authorization{PaymentID: c.GetPaymentId(), OrderID: c.GetOrderId(), CheckoutID: c.GetCheckoutId(), Amount: c.GetAmount()}
	return s.run(ctx, c, c.GetCommandId(), c.GetPaymentId(), false,
		func(st *State) (intent, error) {
			dry := auth
			dry.Outcome, dry.Deadline = domain.OutcomeTimedOut, now
			if _, err := st.Authorize(dry, now); err != nil {
				return intent{}, err
			}
			return intent{Key: domain.AuthorizeKey(c.GetPaymentId()), Amount: c.GetAmount()}, nil
		},
		func(ctx context.Context, in intent) (gateway.Result, error) {
			return s.cfg.Gateway.Authorize(ctx, gateway.AuthorizeRequest{IdempotencyKey: in.Key, Amount: in.Amount, Method: c.GetPaymentMethod()})
		},
		func(st *State, in intent, r gateway.Result) ([]proto.Message, error) {
			if st.Status() == domain.StatusAuthorized && r.Status == gateway.StatusApproved && r.Reference == st.Reference {
				return nil, nil // a concurrent request recorded the same approval first
			}
			a := auth
			switch r.Status {
			case gateway.StatusApproved:
				a.Outcome, a.ProviderReference, a.ExpiresAt = domain.OutcomeApproved, r.Reference, now.Add(s.cfg.AuthorizationTTL)
			case gateway.StatusDeclined:
				a.Outcome, a.DeclineReason, a.Detail = domain.OutcomeDeclined, r.DeclineReason, r.Detail
			default: // timed out or ambiguous: the same to a caller who cannot tell them apart
				a.Outcome, a.Deadline = domain.OutcomeTimedOut, now.Add(s.cfg.GatewayTimeout)
			}
			return st.Authorize(a, now)
		})
}

// settle maps a capture, void or refund answer: approved runs decide; a
// timeout records nothing; a decline is a stored refusal.
func settle(r gateway.Result, decide func() ([]proto.Message, error)) ([]proto.Message, error) {
	switch r.Status {
	case gateway.StatusApproved:
		return decide()
	case gateway.StatusDeclined:
		return nil, command.Reject(CodeGatewayDeclined, fmt.Errorf("provider declined: %s %s", r.DeclineReason, r.Detail))
	}
	return nil, fmt.Errorf("%w (%s): retry the same command", ErrGatewayTimeout, r.Status)
}

// Capture runs CapturePayment; a nil amount captures the whole authorization.
func (s *Service) Capture(ctx context.Context, c *paymentsv1.CapturePayment) (command.Result, error) {
	now := s.cfg.Now()
	id := c.GetPaymentId()
	return s.run(ctx, c, c.GetCommandId(), id, true,
		func(st *State) (intent, error) {
			evs, err := st.Capture(c.GetAmount(), now)
			if err != nil {
				return intent{}, err
			}
			return intent{Key: domain.CaptureKey(id), Reference: st.Reference, Amount: evs[0].(*paymentsv1.PaymentCaptured).GetAmount()}, nil
		},
		func(ctx context.Context, in intent) (gateway.Result, error) {
			return s.cfg.Gateway.Capture(ctx, gateway.CaptureRequest{IdempotencyKey: in.Key, Reference: in.Reference, Amount: in.Amount})
		},
		func(st *State, in intent, r gateway.Result) ([]proto.Message, error) {
			return settle(r, func() ([]proto.Message, error) { return st.Capture(in.Amount, now) })
		})
}

// Void runs VoidPayment: release an authorization not captured.
func (s *Service) Void(ctx context.Context, c *paymentsv1.VoidPayment) (command.Result, error) {
	now := s.cfg.Now()
	id := c.GetPaymentId()
	return s.run(ctx, c, c.GetCommandId(), id, true,
		func(st *State) (intent, error) {
			if _, err := st.Void(c.GetReason(), now); err != nil {
				return intent{}, err
			}
			return intent{Key: domain.VoidKey(id), Reference: st.Reference}, nil
		},
		func(ctx context.Context, in intent) (gateway.Result, error) {
			return s.cfg.Gateway.Void(ctx, gateway.VoidRequest{IdempotencyKey: in.Key, Reference: in.Reference})
		},
		func(st *State, in intent, r gateway.Result) ([]proto.Message, error) {
			return settle(r, func() ([]proto.Message, error) { return st.Void(c.GetReason(), now) })
		})
}

// Refund runs RefundPayment. Refunds are cumulative up to the captured
// amount; the refund id (default: the command id) makes a repeat a no-op.
func (s *Service) Refund(ctx context.Context, c *paymentsv1.RefundPayment) (command.Result, error) {
	now := s.cfg.Now()
	id := c.GetPaymentId()
	refundID := c.GetRefundId()
	if refundID == "" {
		refundID = c.GetCommandId()
	}
	return s.run(ctx, c, c.GetCommandId(), id, true,
		func(st *State) (intent, error) {
			evs, err := st.Refund(refundID, c.GetAmount(), c.GetReason(), now)
			if err != nil {
				return intent{}, err
			}
			return intent{Key: domain.RefundKey(id, refundID), Reference: st.Reference, Amount: c.GetAmount(), Noop: len(evs) == 0}, nil
		},
		func(ctx context.Context, in intent) (gateway.Result, error) {
			return s.cfg.Gateway.Refund(ctx, gateway.RefundRequest{IdempotencyKey: in.Key, Reference: in.Reference, Amount: in.Amount})
		},
		func(st *State, in intent, r gateway.Result) ([]proto.Message, error) {
			if in.Noop {
				return st.Refund(refundID, c.GetAmount(), c.GetReason(), now)
			}
			return settle(r, func() ([]proto.Message, error) { return st.Refund(refundID, c.GetAmount(), c.GetReason(), now) })
		})
}

// Get reads payment id from its stream; ErrNotFound if never attempted.
func (s *Service) Get(ctx context.Context, id string) (View, error) {
	st := Aggregate().New("")
	var from int64 = 1
	for {
		evs, err := s.st.ReadStream(ctx, Stream(id), from, 1000)
		if err != nil {
			return View{}, fmt.Errorf("load payment %s: %w", id, err)
		}
		for _, e := range evs {
			msg, err := s.reg.Decode(e.Type, e.Payload)
			if err != nil {
				return View{}, fmt.Errorf("load payment %s: %w", id, err)
			}
			st = apply(st, msg)
			st.Version = e.Version
			from = e.Version + 1
		}
		if len(evs) < 1000 {
			break
		}
	}
	if st.Status() == domain.StatusNone {
		return View{}, fmt.Errorf("payment %s: %w", id, ErrNotFound)
	}
	v := view(st)
	v.Version = st.Version
	return v, nil
}
