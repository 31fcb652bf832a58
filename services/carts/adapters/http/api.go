// Package api is the carts HTTP API (directory adapters/http; named api so
// it does not shadow net/http). JSON in and out; errors are RFC 9457
// problems with a precise 4xx; every command is validated before anything
// is stored; command routes honour Idempotency-Key; command answers carry
// a Consistency-Token (events/consistency: the version the cart's stream
// reached, for a query to wait on). openapi.json describes exactly the routes Register mounts (a
// test holds the two together).
//
// A command's id is, in order: the Idempotency-Key header (scoped to the
// method and path, so one key reused on two endpoints names two commands),
// the body's command_id (global: the caller promises uniqueness), or a
// fresh KSUID. The command layer decides each id once, so a retry under
// the same key or command_id never adds a line twice, even when the
// idempotency store's record is gone.
package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"regexp"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consistency"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/carts/app"
	"github.com/keel-commerce/keel/services/carts/domain"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/idempotency"
)

// OpenAPI is the API's OpenAPI 3.0 document, served at /openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// Route is one routed endpoint.
type Route struct{ Method, Path string }

// Routes lists the API's endpoints (ops routes excluded) as Register mounts them.
var Routes = []Route{
	{"POST", "/carts"},
	{"GET", "/carts/{id}"},
	{"POST", "/carts/{id}/lines"},
	{"PATCH", "/carts/{id}/lines/{sku}"},
	{"DELETE", "/carts/{id}/lines/{sku}"},
	{"POST", "/carts/{id}/clear"},
	{"POST", "/carts/{id}/checkout"},
}

// Problem types of the carts API (besides httpapi's shared ones).
const (
	TypeUnknownSKU        = httpapi.ProblemBase + "unknown-sku"
	TypeCurrencyMismatch  = httpapi.ProblemBase + "currency-mismatch"
	TypeTooManyLines      = httpapi.ProblemBase + "too-many-lines"
	TypeCartFrozen        = httpapi.ProblemBase + "cart-frozen"
	TypeIllegalTransition = httpapi.ProblemBase + "illegal-transition"
	TypeCartEmpty         = httpapi.ProblemBase + "cart-empty"
	TypeVersionMismatch   = httpapi.ProblemBase + "version-mismatch"
)

// API serves carts. Safe for concurrent use.
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
	mux.Handle("POST /carts", cmd(a.create))
	mux.HandleFunc("GET /carts/{id}", a.get)
	mux.Handle("POST /carts/{id}/lines", cmd(a.addLine))
	mux.Handle("PATCH /carts/{id}/lines/{sku}", cmd(a.changeQuantity))
	mux.Handle("DELETE /carts/{id}/lines/{sku}", cmd(a.removeLine))
	mux.Handle("POST /carts/{id}/clear", cmd(a.clear))
	mux.Handle("POST /carts/{id}/checkout", cmd(a.checkout))
}

// MaxID is the longest cart id, SKU or command id accepted, in bytes.
const MaxID = 64

func validID(field, s string, required bool, errs *httpapi.FieldErrors) {
	if s == "" {
		if required {
			errs.Add(field, "is required")
		}
		return
	}
	if len(s) > MaxID {
		errs.Add(field, "must be at most %d bytes", MaxID)
		return
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' || c == '/' || c == '?' || c == '#' {
			errs.Add(field, "must be printable ASCII without spaces, '/', '?' or '#'")
			return
		}
	}
}

func validQuantity(q *int64, errs *httpapi.FieldErrors) {
	switch {
	case q == nil:
		errs.Add("quantity", "is required")
	case *q < 1 || *q > domain.MaxQuantity:
		errs.Add("quantity", "must be an integer in 1..%d", domain.MaxQuantity)
	}
}

// CreateRequest is the body of POST /carts.
type CreateRequest struct {
	CommandID  string `json:"command_id,omitempty"`
	CartID     string `json:"cart_id,omitempty"`
	CustomerID string `json:"customer_id,omitempty"`
	Currency   string `json:"currency"`
}

// Validate implements httpapi.Validator.
func (r *CreateRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	validID("cart_id", r.CartID, false, &errs)
	if len(r.CustomerID) > 128 {
		errs.Add("customer_id", "must be at most 128 bytes")
	}
	ok := len(r.Currency) == 3
	for i := 0; ok && i < 3; i++ {
		ok = r.Currency[i] >= 'A' && r.Currency[i] <= 'Z'
	}
	if !ok {
		errs.Add("currency", "must be a 3-letter upper-case ISO 4217 code, e.g. EUR")
	}
	return errs
}

// AddLineRequest is the body of POST /carts/{id}/lines.
type AddLineRequest struct {
	CommandID string `json:"command_id,omitempty"`
	SKU       string `json:"sku"`
	Quantity  *int64 `json:"quantity"`
}

// Validate implements httpapi.Validator.
func (r *AddLineRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	validID("sku", r.SKU, true, &errs)
	validQuantity(r.Quantity, &errs)
	return errs
}

// QuantityRequest is the body of PATCH /carts/{id}/lines/{sku}.
type QuantityRequest struct {
	CommandID string `json:"command_id,omitempty"`
	Quantity  *int64 `json:"quantity"`
}

// Validate implements httpapi.Validator.
func (r *QuantityRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	validQuantity(r.Quantity, &errs)
	return errs
}

// CommandRequest is the optional body of DELETE /carts/{id}/lines/{sku}
// and POST /carts/{id}/clear.
type CommandRequest struct {
	CommandID string `json:"command_id,omitempty"`
}

// Customer is who checks out.
type Customer struct {
	CustomerID string `json:"customer_id"`
	Email      string `json:"email"`
	Name       string `json:"name,omitempty"`
}

// Address is where the order ships.
type Address struct {
	Name        string `json:"name"`
	Line1       string `json:"line1"`
	Line2       string `json:"line2,omitempty"`
	City        string `json:"city"`
	Region      string `json:"region,omitempty"`
	PostalCode  string `json:"postal_code"`
	CountryCode string `json:"country_code"`
}

// PaymentMethod is how the customer pays: a kind and the provider's token.
type PaymentMethod struct {
	Kind  string `json:"kind"`
	Token string `json:"token"`
}

// countryCode is an ISO 3166-1 alpha-2 code's shape, as the document's
// pattern states it.
var countryCode = regexp.MustCompile(`^[A-Z]{2}$`)

var paymentKinds = map[string]typesv1.PaymentMethodKind{
	"card":          typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_CARD,
	"wallet":        typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_WALLET,
	"bank_transfer": typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_BANK_TRANSFER,
}

// CheckoutRequest is the body of POST /carts/{id}/checkout.
type CheckoutRequest struct {
	CommandID  string `json:"command_id,omitempty"`
	CheckoutID string `json:"checkout_id,omitempty"`
	// ExpectedVersion, when set, must be the cart's version (the cart the
	// customer saw); 0 or absent skips the check.
	ExpectedVersion int64          `json:"expected_version,omitempty"`
	Customer        *Customer      `json:"customer"`
	ShippingAddress *Address       `json:"shipping_address"`
	PaymentMethod   *PaymentMethod `json:"payment_method"`
}

// Validate implements httpapi.Validator.
func (r *CheckoutRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	validID("checkout_id", r.CheckoutID, false, &errs)
	if r.ExpectedVersion < 0 {
		errs.Add("expected_version", "must not be negative")
	}
	if c := r.Customer; c == nil {
		errs.Add("customer", "is required")
	} else {
		if c.CustomerID == "" {
			errs.Add("customer.customer_id", "is required")
		}
		if len(c.Email) < 3 || len(c.Email) > 254 || !containsAt(c.Email) {
			errs.Add("customer.email", "must be an e-mail address")
		}
	}
	if a := r.ShippingAddress; a == nil {
		errs.Add("shipping_address", "is required")
	} else {
		for _, f := range []struct{ name, v string }{{"name", a.Name}, {"line1", a.Line1}, {"city", a.City}, {"postal_code", a.PostalCode}} {
			if f.v == "" {
				errs.Add("shipping_address."+f.name, "is required")
			}
		}
		if !countryCode.MatchString(a.CountryCode) {
			errs.Add("shipping_address.country_code", "must be a 2-letter upper-case ISO 3166-1 code, e.g. DE")
		}
	}
	if p := r.PaymentMethod; p == nil {
		errs.Add("payment_method", "is required")
	} else {
		if _, ok := paymentKinds[p.Kind]; !ok {
			errs.Add("payment_method.kind", "must be card, wallet or bank_transfer")
		}
		if p.Token == "" {
			errs.Add("payment_method.token", "is required")
		}
	}
	return errs
}

func containsAt(s string) bool {
	for i := 1; i < len(s)-1; i++ {
		if s[i] == '@' {
			return true
		}
	}
	return false
}

// decode decodes a required body.
func decode(w http.ResponseWriter, r *http.Request, dst any) bool {
	if p := httpapi.Decode(w, r, dst); p != nil {
		httpapi.WriteProblem(w, r, p)
		return false
	}
	return true
}

// decodeOptional decodes a body if there is one.
func decodeOptional(w http.ResponseWriter, r *http.Request, dst any) bool {
	if r.ContentLength == 0 {
		return true
	}
	return decode(w, r, dst)
}

func (a *API) create(w http.ResponseWriter, r *http.Request) {
	var req CreateRequest
	if !decode(w, r, &req) {
		return
	}
	id := req.CartID
	if id == "" {
		id = a.svc.NewID()
	}
	res, err := a.svc.Create(r.Context(), app.Create{CommandID: idempotency.CommandID(r, req.CommandID), CartID: id, CustomerID: req.CustomerID, Currency: req.Currency})
	a.answer(w, r, res, err, http.StatusCreated)
}

func (a *API) addLine(w http.ResponseWriter, r *http.Request) {
	var req AddLineRequest
	if !decode(w, r, &req) {
		return
	}
	res, err := a.svc.AddLine(r.Context(), app.AddLine{CommandID: idempotency.CommandID(r, req.CommandID), CartID: r.PathValue("id"), SKU: req.SKU, Quantity: *req.Quantity})
	a.answer(w, r, res, err, http.StatusOK)
}

func (a *API) changeQuantity(w http.ResponseWriter, r *http.Request) {
	var req QuantityRequest
	if !decode(w, r, &req) {
		return
	}
	res, err := a.svc.ChangeQuantity(r.Context(), app.ChangeQuantity{CommandID: idempotency.CommandID(r, req.CommandID), CartID: r.PathValue("id"), SKU: r.PathValue("sku"), Quantity: *req.Quantity})
	a.answer(w, r, res, err, http.StatusOK)
}

func (a *API) removeLine(w http.ResponseWriter, r *http.Request) {
	var req CommandRequest
	if !decodeOptional(w, r, &req) {
		return
	}
	res, err := a.svc.RemoveLine(r.Context(), app.RemoveLine{CommandID: idempotency.CommandID(r, req.CommandID), CartID: r.PathValue("id"), SKU: r.PathValue("sku")})
	a.answer(w, r, res, err, http.StatusOK)
}

func (a *API) clear(w http.ResponseWriter, r *http.Request) {
	var req CommandRequest
	if !decodeOptional(w, r, &req) {
		return
	}
	res, err := a.svc.Clear(r.Context(), app.Clear{CommandID: idempotency.CommandID(r, req.CommandID), CartID: r.PathValue("id")})
	a.answer(w, r, res, err, http.StatusOK)
}

func (a *API) checkout(w http.ResponseWriter, r *http.Request) {
	var req CheckoutRequest
	if !decode(w, r, &req) {
		return
	}
	c, s, p := req.Customer, req.ShippingAddress, req.PaymentMethod
	res, err := a.svc.RequestCheckout(r.Context(), app.RequestCheckout{
		CommandID: idempotency.CommandID(r, req.CommandID), CartID: r.PathValue("id"), CheckoutID: req.CheckoutID, ExpectedVersion: req.ExpectedVersion,
		Customer: &typesv1.Customer{CustomerId: c.CustomerID, Email: c.Email, Name: c.Name},
		ShippingAddress: &typesv1.Address{Name: s.Name, Line1: s.Line1, Line2: s.Line2, City: s.City, Region: s.Region,
			PostalCode: s.PostalCode, CountryCode: s.CountryCode},
		PaymentMethod: &typesv1.PaymentMethod{Kind: paymentKinds[p.Kind], Token: p.Token},
	})
	a.answer(w, r, res, err, http.StatusOK)
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	v, err := a.svc.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		a.problem(w, r, err)
		return
	}
	_ = httpapi.WriteJSON(w, http.StatusOK, v)
}

// answer sends a command's stored response (the cart after it) or its problem.
func (a *API) answer(w http.ResponseWriter, r *http.Request, res command.Result, err error, status int) {
	if err != nil {
		a.problem(w, r, err)
		return
	}
	h := w.Header()
	if tok := consistency.New("carts", res.Streams); !tok.IsZero() {
		h.Set(consistency.Header, tok.String())
	}
	h.Set("Content-Type", "application/json")
	if status == http.StatusCreated {
		var v struct {
			CartID string `json:"cart_id"`
		}
		if json.Unmarshal(res.Response, &v) == nil && v.CartID != "" {
			h.Set("Location", "/carts/"+v.CartID)
		}
	}
	w.WriteHeader(status)
	_, _ = w.Write(append(res.Response, '\n'))
}

func (a *API) problem(w http.ResponseWriter, r *http.Request, err error) {
	var rej *command.Rejection
	switch {
	case errors.Is(err, app.ErrInvalid):
		httpapi.WriteProblem(w, r, httpapi.Invalid([]httpapi.FieldError{{Message: err.Error()}}))
	case errors.Is(err, app.ErrUnknownSKU):
		httpapi.WriteProblem(w, r, &httpapi.Problem{Type: TypeUnknownSKU, Title: "Unknown SKU", Status: http.StatusUnprocessableEntity,
			Detail: err.Error(), Extensions: map[string]any{"code": "unknown_sku"}})
	case errors.Is(err, app.ErrNotFound):
		httpapi.WriteProblem(w, r, httpapi.NotFound(err.Error()))
	case errors.As(err, &rej):
		httpapi.WriteProblem(w, r, rejection(rej))
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, command.ErrClosed):
		httpapi.WriteProblem(w, r, &httpapi.Problem{Type: httpapi.TypeNotReady, Title: "Unavailable", Status: http.StatusServiceUnavailable,
			Detail: "the service is shutting down or the request ran out of time; retry with the same Idempotency-Key"})
	default:
		a.log.ErrorContext(r.Context(), "carts: command failed", "err", err, "request_id", httpapi.RequestIDFrom(r.Context()))
		httpapi.WriteProblem(w, r, httpapi.Internal())
	}
}

// rejection maps a refused command to its problem: 404 for what does not
// exist, 409 for what the cart's state forbids, 422 for what no state allows.
func rejection(rej *command.Rejection) *httpapi.Problem {
	p := &httpapi.Problem{Detail: rej.Detail, Extensions: map[string]any{"code": rej.Code}}
	set := func(status int, typ, title string) { p.Status, p.Type, p.Title = status, typ, title }
	switch rej.Code {
	case app.CodeUnknownCart:
		set(http.StatusNotFound, httpapi.TypeNotFound, "Unknown cart")
	case app.CodeNoSuchLine:
		set(http.StatusNotFound, httpapi.TypeNotFound, "No such line")
	case app.CodeCartFrozen:
		set(http.StatusConflict, TypeCartFrozen, "Cart is frozen for checkout")
	case app.CodeCartExists:
		set(http.StatusConflict, httpapi.TypeConflict, "Cart exists")
	case app.CodeIllegalTransition, app.CodeOtherCheckout:
		set(http.StatusConflict, TypeIllegalTransition, "Not allowed in the cart's state")
	case app.CodeVersionMismatch:
		set(http.StatusConflict, TypeVersionMismatch, "Cart changed")
	case app.CodeCurrencyMismatch:
		set(http.StatusUnprocessableEntity, TypeCurrencyMismatch, "Currency mismatch")
	case app.CodeTooManyLines:
		set(http.StatusUnprocessableEntity, TypeTooManyLines, "Too many lines")
	case app.CodeEmpty:
		set(http.StatusUnprocessableEntity, TypeCartEmpty, "Cart is empty")
	default:
		set(http.StatusUnprocessableEntity, httpapi.TypeValidation, "Invalid request")
	}
	return p
}
