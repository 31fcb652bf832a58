// Package api is the payments service's HTTP command and query API
// (directory adapters/http; named api so it does not shadow net/http).
// Errors are RFC 9457 problems; every command is validated before anything
// is stored; command routes honour Idempotency-Key. openapi.json describes
// exactly the routes Register mounts (a test holds the two together).
//
// A command's id is, in order: the Idempotency-Key header (scoped to the
// method and path), the body's command_id (global), or a fresh KSUID.
// Successful commands carry a Consistency-Token header (events/consistency):
// the version the payment's stream reached, for a query to wait on.
//
// Authorization outcomes: 201 authorized; 402 payment-declined (a problem,
// but the decline is recorded: the payment is declined, final); 202 unknown
// (the provider timed out; POST /payments again with the same payment_id
// and amount and a new Idempotency-Key: the provider key is derived from
// the payment id, so the retry resolves the original charge and never
// charges twice). 402 rather than 422 because the request was valid: the
// payer's provider refused it.
//
// Other statuses: 400 malformed JSON, unknown field or wrong type; 413;
// 415; 422 invalid values (every field listed), currency mismatch, capture
// above the authorized or refunds above the captured amount; 404 unknown
// payment; 409 a command the payment's state does not allow
// (illegal-transition: e.g. void after capture) or a refund id reused for
// another amount; 502 provider failure and 504 provider timeout on
// capture, void and refund (nothing recorded: retry with the same key).
package api

import (
	_ "embed"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consistency"
	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/idempotency"
	"github.com/keel-commerce/keel/services/payments/app"
)

// OpenAPI is the API's OpenAPI 3.0 document, served at /openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// TypeDeclined is the problem type of a declined authorization (402).
const TypeDeclined = httpapi.ProblemBase + "payment-declined"

// Route is one routed endpoint.
type Route struct{ Method, Path string }

// Routes lists the API's endpoints (ops routes excluded) as Register mounts them.
var Routes = []Route{
	{"POST", "/payments"},
	{"GET", "/payments/{id}"},
	{"POST", "/payments/{id}/capture"},
	{"POST", "/payments/{id}/void"},
	{"POST", "/payments/{id}/refund"},
}

// API serves payments. Safe for concurrent use.
type API struct {
	svc  *app.Service
	keys *idempotency.Store
	log  *slog.Logger
}

// New returns the API on svc; keys (may be nil) guards the command routes.
func New(svc *app.Service, keys *idempotency.Store, log *slog.Logger) *API {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &API{svc: svc, keys: keys, log: log}
}

// Register mounts the routes on mux.
func (a *API) Register(mux *http.ServeMux) {
	cmd := func(h http.HandlerFunc) http.Handler {
		if a.keys == nil {
			return h
		}
		return a.keys.Wrap(h)
	}
	mux.Handle("POST /payments", cmd(a.authorize))
	mux.HandleFunc("GET /payments/{id}", a.get)
	mux.Handle("POST /payments/{id}/capture", cmd(a.capture))
	mux.Handle("POST /payments/{id}/void", cmd(a.void))
	mux.Handle("POST /payments/{id}/refund", cmd(a.refund))
}

// Money is an amount in minor units (cents) of an ISO 4217 currency.
type Money struct {
	AmountMinor *int64 `json:"amount_minor"`
	Currency    string `json:"currency"`
}

func (m *Money) validate(field string, errs *httpapi.FieldErrors) {
	if m == nil {
		errs.Add(field, "is required")
		return
	}
	switch {
	case m.AmountMinor == nil:
		errs.Add(field+".amount_minor", "is required")
	case *m.AmountMinor <= 0:
		errs.Add(field+".amount_minor", "must be positive, got %d", *m.AmountMinor)
	}
	if !currency(m.Currency) {
		errs.Add(field+".currency", "must be a 3-letter upper-case ISO 4217 code, e.g. EUR; got %q", m.Currency)
	}
}

func (m *Money) proto() *typesv1.Money {
	if m == nil {
		return nil
	}
	return &typesv1.Money{AmountMinor: *m.AmountMinor, Currency: m.Currency}
}

func currency(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := range 3 {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// Methods maps the API's payment method kinds to the event's enum.
var Methods = map[string]typesv1.PaymentMethodKind{
	"card":          typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_CARD,
	"wallet":        typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_WALLET,
	"bank_transfer": typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_BANK_TRANSFER,
}

// Method is how the payer pays: a kind and the provider's token for it.
type Method struct {
	Kind  string `json:"kind"`
	Token string `json:"token,omitempty"`
}

// AuthorizeRequest is the body of POST /payments.
type AuthorizeRequest struct {
	CommandID  string  `json:"command_id,omitempty"`
	PaymentID  string  `json:"payment_id"`
	OrderID    string  `json:"order_id"`
	CheckoutID string  `json:"checkout_id,omitempty"`
	Amount     *Money  `json:"amount"`
	Method     *Method `json:"method"`
}

// Validate implements httpapi.Validator.
func (r *AuthorizeRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	errs.ID("command_id", r.CommandID, false)
	errs.ID("payment_id", r.PaymentID, true)
	errs.ID("order_id", r.OrderID, true)
	errs.ID("checkout_id", r.CheckoutID, false)
	r.Amount.validate("amount", &errs)
	if r.Method == nil {
		errs.Add("method", "is required")
	} else {
		if _, ok := Methods[r.Method.Kind]; !ok {
			errs.Add("method.kind", "must be one of card, wallet, bank_transfer; got %q", r.Method.Kind)
		}
		errs.Text("method.token", r.Method.Token, httpapi.MaxToken, false)
	}
	return errs
}

// CaptureRequest is the (optional) body of POST /payments/{id}/capture;
// without an amount the whole authorization is captured.
type CaptureRequest struct {
	CommandID string `json:"command_id,omitempty"`
	Amount    *Money `json:"amount,omitempty"`
}

// Validate implements httpapi.Validator.
func (r *CaptureRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	errs.ID("command_id", r.CommandID, false)
	if r.Amount != nil {
		r.Amount.validate("amount", &errs)
	}
	return errs
}

// VoidRequest is the (optional) body of POST /payments/{id}/void.
type VoidRequest struct {
	CommandID string `json:"command_id,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// Validate implements httpapi.Validator.
func (r *VoidRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	errs.ID("command_id", r.CommandID, false)
	errs.Text("reason", r.Reason, httpapi.MaxNote, false)
	return errs
}

// RefundRequest is the body of POST /payments/{id}/refund. The refund id
// (default: the command id) makes a repeated refund a no-op.
type RefundRequest struct {
	CommandID string `json:"command_id,omitempty"`
	RefundID  string `json:"refund_id,omitempty"`
	Amount    *Money `json:"amount"`
	Reason    string `json:"reason,omitempty"`
}

// Validate implements httpapi.Validator.
func (r *RefundRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	errs.ID("command_id", r.CommandID, false)
	errs.ID("refund_id", r.RefundID, false)
	r.Amount.validate("amount", &errs)
	errs.Text("reason", r.Reason, httpapi.MaxNote, false)
	return errs
}

// decodeOptional decodes a body that may be absent.
func decodeOptional(w http.ResponseWriter, r *http.Request, dst any) bool {
	if r.ContentLength == 0 {
		return true
	}
	if p := httpapi.Decode(w, r, dst); p != nil {
		httpapi.WriteProblem(w, r, p)
		return false
	}
	return true
}

func (a *API) authorize(w http.ResponseWriter, r *http.Request) {
	var req AuthorizeRequest
	if p := httpapi.Decode(w, r, &req); p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	res, err := a.svc.Authorize(r.Context(), &paymentsv1.AuthorizePayment{CommandId: idempotency.CommandID(r, req.CommandID),
		PaymentId: req.PaymentID, OrderId: req.OrderID, CheckoutId: req.CheckoutID, Amount: req.Amount.proto(),
		PaymentMethod: &typesv1.PaymentMethod{Kind: Methods[req.Method.Kind], Token: req.Method.Token}})
	a.answer(w, r, req.PaymentID, res, err)
}

func (a *API) capture(w http.ResponseWriter, r *http.Request) {
	var req CaptureRequest
	if !decodeOptional(w, r, &req) {
		return
	}
	pid := r.PathValue("id")
	res, err := a.svc.Capture(r.Context(), &paymentsv1.CapturePayment{CommandId: idempotency.CommandID(r, req.CommandID), PaymentId: pid, Amount: req.Amount.proto()})
	a.answer(w, r, pid, res, err)
}

func (a *API) void(w http.ResponseWriter, r *http.Request) {
	var req VoidRequest
	if !decodeOptional(w, r, &req) {
		return
	}
	pid := r.PathValue("id")
	res, err := a.svc.Void(r.Context(), &paymentsv1.VoidPayment{CommandId: idempotency.CommandID(r, req.CommandID), PaymentId: pid, Reason: req.Reason})
	a.answer(w, r, pid, res, err)
}

func (a *API) refund(w http.ResponseWriter, r *http.Request) {
	var req RefundRequest
	if p := httpapi.Decode(w, r, &req); p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	pid := r.PathValue("id")
	res, err := a.svc.Refund(r.Context(), &paymentsv1.RefundPayment{CommandId: idempotency.CommandID(r, req.CommandID), PaymentId: pid,
		RefundId: req.RefundID, Amount: req.Amount.proto(), Reason: req.Reason})
	a.answer(w, r, pid, res, err)
}

// answer maps a command's outcome to HTTP: the payment as the command left
// it (the stored receipt), or a problem.
func (a *API) answer(w http.ResponseWriter, r *http.Request, pid string, res command.Result, err error) {
	if err != nil {
		a.problem(w, r, err)
		return
	}
	var v app.View
	if err := json.Unmarshal(res.Response, &v); err != nil {
		a.problem(w, r, err)
		return
	}
	if tok := consistency.New("payments", res.Streams); !tok.IsZero() {
		w.Header().Set(consistency.Header, tok.String())
	}
	w.Header().Set("Location", "/payments/"+pid)
	status := http.StatusOK
	switch {
	case r.Pattern == "POST /payments" && v.Status == "authorized":
		status = http.StatusCreated
	case v.Status == "unknown":
		status = http.StatusAccepted
	case v.Status == "declined":
		httpapi.WriteProblem(w, r, &httpapi.Problem{Type: TypeDeclined, Title: "Payment declined", Status: http.StatusPaymentRequired,
			Detail:     "the payment provider declined the authorization (" + v.DeclineReason + "); the payment is declined for good, start a new payment",
			Extensions: map[string]any{"payment_id": v.PaymentID, "decline_reason": v.DeclineReason}})
		return
	}
	if err := httpapi.WriteJSON(w, status, v); err != nil {
		a.log.WarnContext(r.Context(), "payments: write response", "err", err)
	}
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	v, err := a.svc.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		a.problem(w, r, err)
		return
	}
	_ = httpapi.WriteJSON(w, http.StatusOK, v)
}

var problemTypes = map[string]struct {
	slug, title string
	status      int
}{
	app.CodeIllegalTransition: {"illegal-transition", "Illegal transition", http.StatusConflict},
	app.CodeRefundConflict:    {"refund-conflict", "Refund id reused with another amount", http.StatusConflict},
	app.CodeAmountMismatch:    {"amount-mismatch", "Retry for a different amount", http.StatusConflict},
	app.CodeCurrencyMismatch:  {"currency-mismatch", "Currency mismatch", http.StatusUnprocessableEntity},
	app.CodeExceedsAuthorized: {"exceeds-authorized", "Capture exceeds the authorized amount", http.StatusUnprocessableEntity},
	app.CodeExceedsCaptured:   {"exceeds-captured", "Refunds exceed the captured amount", http.StatusUnprocessableEntity},
	app.CodeGatewayDeclined:   {"provider-declined", "Provider declined", http.StatusUnprocessableEntity},
}

func (a *API) problem(w http.ResponseWriter, r *http.Request, err error) {
	if p := idempotency.CommandIDReused(err); p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	var rej *command.Rejection
	switch {
	case errors.Is(err, app.ErrInvalid):
		httpapi.WriteProblem(w, r, httpapi.Invalid([]httpapi.FieldError{{Message: err.Error()}}))
	case errors.Is(err, app.ErrNotFound):
		httpapi.WriteProblem(w, r, httpapi.NotFound(err.Error()))
	case errors.As(err, &rej):
		p := &httpapi.Problem{Type: httpapi.TypeValidation, Title: "Invalid request", Status: http.StatusUnprocessableEntity,
			Detail: rej.Detail, Extensions: map[string]any{"code": rej.Code}}
		if t, ok := problemTypes[rej.Code]; ok {
			p.Type, p.Title, p.Status = httpapi.ProblemBase+t.slug, t.title, t.status
		}
		httpapi.WriteProblem(w, r, p)
	case errors.Is(err, app.ErrGatewayTimeout):
		httpapi.WriteProblem(w, r, &httpapi.Problem{Type: httpapi.ProblemBase + "provider-timeout", Title: "Provider timed out",
			Status: http.StatusGatewayTimeout, Detail: "the payment provider did not answer in time; nothing was recorded, retry with the same Idempotency-Key"})
	case errors.Is(err, app.ErrGateway):
		a.log.ErrorContext(r.Context(), "payments: provider failed", "err", err, "request_id", httpapi.RequestIDFrom(r.Context()))
		httpapi.WriteProblem(w, r, &httpapi.Problem{Type: httpapi.ProblemBase + "provider-failed", Title: "Provider failed",
			Status: http.StatusBadGateway, Detail: "the payment provider call failed; nothing was recorded, retry with the same Idempotency-Key"})
	default:
		a.log.ErrorContext(r.Context(), "payments: command failed", "err", err, "request_id", httpapi.RequestIDFrom(r.Context()))
		httpapi.WriteProblem(w, r, httpapi.Unexpected(err))
	}
}
