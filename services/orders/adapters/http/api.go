// Package api is the orders service's HTTP command and query API
// (directory adapters/http; named api so it does not shadow net/http).
// Errors are RFC 9457 problems; every command is validated before anything
// is stored; command routes honour Idempotency-Key. openapi.json describes
// exactly the routes Register mounts (a test holds the two together).
//
// A command's id is, in order: the Idempotency-Key header (scoped to the
// method and path, so one key reused on two endpoints names two commands),
// the body's command_id (global: the caller promises uniqueness), or a
// fresh KSUID. Successful commands answer the order as it now is, with a
// Consistency-Token header (events/consistency): the version the order's
// stream reached after the command, for a query to wait on.
//
// Status codes: 400 malformed JSON, unknown field or wrong type; 413 body
// over 64 KiB; 415 not application/json; 422 invalid values (every field
// listed), totals or amounts that do not add up, currency mismatch; 404
// unknown order; 409 a transition the order's state does not allow
// (illegal-transition, refund-required) or a checkout id clash.
package api

import (
	_ "embed"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consistency"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/idempotency"
	"github.com/keel-commerce/keel/services/orders/app"
	"github.com/keel-commerce/keel/services/orders/domain"
)

// OpenAPI is the API's OpenAPI 3.0 document, served at /openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// MaxLines caps the lines of one order.
const MaxLines = 100

// Route is one routed endpoint.
type Route struct{ Method, Path string }

// Routes lists the API's endpoints (ops routes excluded) as Register mounts them.
var Routes = []Route{
	{"POST", "/orders"},
	{"GET", "/orders/{id}"},
	{"POST", "/orders/{id}/confirm"},
	{"POST", "/orders/{id}/pay"},
	{"POST", "/orders/{id}/cancel"},
	{"POST", "/orders/{id}/ship"},
}

// API serves orders. Safe for concurrent use.
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
	mux.Handle("POST /orders", cmd(a.place))
	mux.HandleFunc("GET /orders/{id}", a.get)
	mux.Handle("POST /orders/{id}/confirm", cmd(a.confirm))
	mux.Handle("POST /orders/{id}/pay", cmd(a.pay))
	mux.Handle("POST /orders/{id}/cancel", cmd(a.cancel))
	mux.Handle("POST /orders/{id}/ship", cmd(a.ship))
}

// Money is an amount in minor units (cents) of an ISO 4217 currency.
type Money struct {
	AmountMinor *int64 `json:"amount_minor"`
	Currency    string `json:"currency"`
}

// validate checks m; positive requires > 0, else ≥ 0. It returns the
// currency when it is well-formed.
func (m *Money) validate(field string, positive bool, errs *httpapi.FieldErrors) string {
	if m == nil {
		errs.Add(field, "is required")
		return ""
	}
	switch {
	case m.AmountMinor == nil:
		errs.Add(field+".amount_minor", "is required")
	case positive && *m.AmountMinor <= 0:
		errs.Add(field+".amount_minor", "must be positive, got %d", *m.AmountMinor)
	case *m.AmountMinor < 0:
		errs.Add(field+".amount_minor", "must not be negative, got %d", *m.AmountMinor)
	}
	if !currency(m.Currency) {
		errs.Add(field+".currency", "must be a 3-letter upper-case ISO 4217 code, e.g. EUR; got %q", m.Currency)
		return ""
	}
	return m.Currency
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

// sameCurrency adds a currency-mismatch error when cur differs from want.
func sameCurrency(field, cur string, want *string, errs *httpapi.FieldErrors) {
	switch {
	case cur == "":
	case *want == "":
		*want = cur
	case cur != *want:
		errs.Add(field, "currency mismatch: %s, but the order is in %s", cur, *want)
	}
}

// Customer is who places the order.
type Customer struct {
	CustomerID string `json:"customer_id"`
	Email      string `json:"email,omitempty"`
	Name       string `json:"name,omitempty"`
}

// Address is a postal address.
type Address struct {
	Name        string `json:"name,omitempty"`
	Line1       string `json:"line1"`
	Line2       string `json:"line2,omitempty"`
	City        string `json:"city"`
	Region      string `json:"region,omitempty"`
	PostalCode  string `json:"postal_code,omitempty"`
	CountryCode string `json:"country_code"`
}

// Line is one line of a PlaceRequest.
type Line struct {
	SKU       string `json:"sku"`
	Name      string `json:"name,omitempty"`
	Quantity  *int64 `json:"quantity"`
	UnitPrice *Money `json:"unit_price"`
}

// Totals are the optional amounts beyond the lines; the total, if given,
// must equal subtotal + shipping + tax - discount.
type Totals struct {
	Shipping *Money `json:"shipping,omitempty"`
	Tax      *Money `json:"tax,omitempty"`
	Discount *Money `json:"discount,omitempty"`
	Total    *Money `json:"total,omitempty"`
}

// PlaceRequest is the body of POST /orders.
type PlaceRequest struct {
	CommandID       string    `json:"command_id,omitempty"`
	CheckoutID      string    `json:"checkout_id"`
	CartID          string    `json:"cart_id,omitempty"`
	Customer        *Customer `json:"customer"`
	Lines           []Line    `json:"lines"`
	Totals          *Totals   `json:"totals,omitempty"`
	ShippingAddress *Address  `json:"shipping_address"`
}

// Validate implements httpapi.Validator.
func (r *PlaceRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	errs.ID("command_id", r.CommandID, false)
	errs.IDUpTo("checkout_id", r.CheckoutID, 64, true) // the order id is "order-" + it
	errs.ID("cart_id", r.CartID, false)
	if c := r.Customer; c == nil {
		errs.Add("customer", "is required")
	} else {
		errs.ID("customer.customer_id", c.CustomerID, true)
		errs.Text("customer.email", c.Email, httpapi.MaxEmail, false)
		errs.Text("customer.name", c.Name, httpapi.MaxName, false)
	}
	if r.ShippingAddress == nil {
		errs.Add("shipping_address", "is required")
	} else {
		a := r.ShippingAddress
		errs.Text("shipping_address.name", a.Name, httpapi.MaxName, false)
		errs.Text("shipping_address.line1", a.Line1, httpapi.MaxName, true)
		errs.Text("shipping_address.line2", a.Line2, httpapi.MaxName, false)
		errs.Text("shipping_address.city", a.City, httpapi.MaxShortText, true)
		errs.Text("shipping_address.region", a.Region, httpapi.MaxShortText, false)
		errs.Text("shipping_address.postal_code", a.PostalCode, httpapi.MaxPostalCode, false)
		if len(a.CountryCode) != 2 || a.CountryCode[0] < 'A' || a.CountryCode[0] > 'Z' || a.CountryCode[1] < 'A' || a.CountryCode[1] > 'Z' {
			errs.Add("shipping_address.country_code", "must be a 2-letter upper-case ISO 3166-1 code, e.g. DE")
		}
	}
	switch {
	case len(r.Lines) == 0:
		errs.Add("lines", "at least one line is required")
	case len(r.Lines) > MaxLines:
		errs.Add("lines", "at most %d lines, got %d", MaxLines, len(r.Lines))
	}
	var cur string
	seen := map[string]bool{}
	for i, l := range r.Lines {
		f := func(s string) string { return "lines." + strconv.Itoa(i) + s }
		errs.SKU(f(".sku"), l.SKU, true)
		errs.Text(f(".name"), l.Name, httpapi.MaxName, false)
		if l.SKU != "" && seen[l.SKU] {
			errs.Add(f(".sku"), "sku %s appears twice", l.SKU)
		}
		seen[l.SKU] = true
		switch {
		case l.Quantity == nil:
			errs.Add(f(".quantity"), "is required")
		case *l.Quantity <= 0:
			errs.Add(f(".quantity"), "must be positive, got %d", *l.Quantity)
		}
		sameCurrency(f(".unit_price.currency"), l.UnitPrice.validate(f(".unit_price"), true, &errs), &cur, &errs)
	}
	if t := r.Totals; t != nil {
		for _, m := range []struct {
			name string
			m    *Money
		}{{"shipping", t.Shipping}, {"tax", t.Tax}, {"discount", t.Discount}, {"total", t.Total}} {
			if m.m != nil {
				sameCurrency("totals."+m.name+".currency", m.m.validate("totals."+m.name, false, &errs), &cur, &errs)
			}
		}
	}
	return errs
}

func (r *PlaceRequest) proto(cmdID string) *ordersv1.PlaceOrder {
	c := &ordersv1.PlaceOrder{CommandId: cmdID, CheckoutId: r.CheckoutID, CartId: r.CartID,
		Customer: &typesv1.Customer{CustomerId: r.Customer.CustomerID, Email: r.Customer.Email, Name: r.Customer.Name},
		ShippingAddress: &typesv1.Address{Name: r.ShippingAddress.Name, Line1: r.ShippingAddress.Line1, Line2: r.ShippingAddress.Line2,
			City: r.ShippingAddress.City, Region: r.ShippingAddress.Region, PostalCode: r.ShippingAddress.PostalCode,
			CountryCode: r.ShippingAddress.CountryCode}}
	for _, l := range r.Lines {
		c.Lines = append(c.Lines, &ordersv1.OrderLine{Sku: l.SKU, Name: l.Name, Quantity: *l.Quantity, UnitPrice: l.UnitPrice.proto()})
	}
	if t := r.Totals; t != nil {
		c.Totals = &typesv1.Totals{Shipping: t.Shipping.proto(), Tax: t.Tax.proto(), Discount: t.Discount.proto(), Total: t.Total.proto()}
	}
	return c
}

// CommandRequest is the (optional) body of POST /orders/{id}/confirm.
type CommandRequest struct {
	CommandID string `json:"command_id,omitempty"`
}

// Validate implements httpapi.Validator.
func (r *CommandRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	errs.ID("command_id", r.CommandID, false)
	return errs
}

// PayRequest is the body of POST /orders/{id}/pay.
type PayRequest struct {
	CommandID string `json:"command_id,omitempty"`
	PaymentID string `json:"payment_id"`
	Amount    *Money `json:"amount"`
}

// Validate implements httpapi.Validator.
func (r *PayRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	errs.ID("command_id", r.CommandID, false)
	errs.ID("payment_id", r.PaymentID, true)
	r.Amount.validate("amount", true, &errs)
	return errs
}

// CancelRequest is the body of POST /orders/{id}/cancel.
type CancelRequest struct {
	CommandID string `json:"command_id,omitempty"`
	Reason    string `json:"reason"`
	Detail    string `json:"detail,omitempty"`
}

// Validate implements httpapi.Validator.
func (r *CancelRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	if _, ok := codec.ParseEnum[ordersv1.CancelReason](r.Reason); !ok {
		errs.Add("reason", "must be one of %s; got %q", strings.Join(codec.EnumNames(ordersv1.CancelReason(0).Descriptor()), ", "), r.Reason)
	}
	errs.ID("command_id", r.CommandID, false)
	errs.Text("detail", r.Detail, httpapi.MaxNote, false)
	return errs
}

// ShipRequest is the body of POST /orders/{id}/ship.
type ShipRequest struct {
	CommandID      string `json:"command_id,omitempty"`
	ShipmentID     string `json:"shipment_id"`
	Carrier        string `json:"carrier"`
	TrackingNumber string `json:"tracking_number,omitempty"`
}

// Validate implements httpapi.Validator.
func (r *ShipRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	errs.ID("command_id", r.CommandID, false)
	errs.ID("shipment_id", r.ShipmentID, true)
	errs.Text("carrier", r.Carrier, httpapi.MaxShortText, true)
	errs.Text("tracking_number", r.TrackingNumber, httpapi.MaxShortText, false)
	return errs
}

func (a *API) place(w http.ResponseWriter, r *http.Request) {
	var req PlaceRequest
	if p := httpapi.Decode(w, r, &req); p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	res, err := a.svc.Place(r.Context(), req.proto(idempotency.CommandID(r, req.CommandID)))
	status := http.StatusOK
	if err == nil {
		var rc app.Receipt
		if jerr := json.Unmarshal(res.Response, &rc); jerr == nil && rc.Created {
			status = http.StatusCreated
		}
	}
	a.answer(w, r, domain.OrderID(req.CheckoutID), res, err, status)
}

func (a *API) confirm(w http.ResponseWriter, r *http.Request) {
	var req CommandRequest
	if r.ContentLength != 0 {
		if p := httpapi.Decode(w, r, &req); p != nil {
			httpapi.WriteProblem(w, r, p)
			return
		}
	}
	oid := r.PathValue("id")
	res, err := a.svc.Confirm(r.Context(), &ordersv1.ConfirmOrder{CommandId: idempotency.CommandID(r, req.CommandID), OrderId: oid})
	a.answer(w, r, oid, res, err, http.StatusOK)
}

func (a *API) pay(w http.ResponseWriter, r *http.Request) {
	var req PayRequest
	if p := httpapi.Decode(w, r, &req); p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	oid := r.PathValue("id")
	res, err := a.svc.MarkPaid(r.Context(), &ordersv1.MarkOrderPaid{CommandId: idempotency.CommandID(r, req.CommandID), OrderId: oid,
		PaymentId: req.PaymentID, Amount: req.Amount.proto()})
	a.answer(w, r, oid, res, err, http.StatusOK)
}

func (a *API) cancel(w http.ResponseWriter, r *http.Request) {
	var req CancelRequest
	if p := httpapi.Decode(w, r, &req); p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	oid := r.PathValue("id")
	reason, _ := codec.ParseEnum[ordersv1.CancelReason](req.Reason) // validated
	res, err := a.svc.Cancel(r.Context(), &ordersv1.CancelOrder{CommandId: idempotency.CommandID(r, req.CommandID), OrderId: oid,
		Reason: reason, Detail: req.Detail})
	a.answer(w, r, oid, res, err, http.StatusOK)
}

func (a *API) ship(w http.ResponseWriter, r *http.Request) {
	var req ShipRequest
	if p := httpapi.Decode(w, r, &req); p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	oid := r.PathValue("id")
	res, err := a.svc.Ship(r.Context(), &ordersv1.ShipOrder{CommandId: idempotency.CommandID(r, req.CommandID), OrderId: oid,
		ShipmentId: req.ShipmentID, Carrier: req.Carrier, TrackingNumber: req.TrackingNumber})
	a.answer(w, r, oid, res, err, http.StatusOK)
}

// answer maps a command's outcome to HTTP: the order as it now is, or a
// problem.
func (a *API) answer(w http.ResponseWriter, r *http.Request, oid string, res command.Result, err error, status int) {
	if err != nil {
		a.problem(w, r, err)
		return
	}
	v, err := a.svc.Get(r.Context(), oid)
	if err != nil {
		a.problem(w, r, err)
		return
	}
	if tok := consistency.New("orders", res.Streams); !tok.IsZero() {
		w.Header().Set(consistency.Header, tok.String())
	}
	w.Header().Set("Location", "/orders/"+oid)
	if err := httpapi.WriteJSON(w, status, v); err != nil {
		a.log.WarnContext(r.Context(), "orders: write response", "err", err)
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

// problemTypes maps rejection codes to problem types and statuses.
var problemTypes = map[string]struct {
	slug, title string
	status      int
}{
	app.CodeIllegalTransition: {"illegal-transition", "Illegal transition", http.StatusConflict},
	app.CodeRefundRequired:    {"refund-required", "Refund required", http.StatusConflict},
	app.CodeOtherCheckout:     {"other-checkout", "Order belongs to another checkout", http.StatusConflict},
	app.CodeCurrencyMismatch:  {"currency-mismatch", "Currency mismatch", http.StatusUnprocessableEntity},
	app.CodeTotalsMismatch:    {"totals-mismatch", "Totals do not match the lines", http.StatusUnprocessableEntity},
	app.CodeAmountMismatch:    {"amount-mismatch", "Paid amount differs from the order total", http.StatusUnprocessableEntity},
	app.CodeOverflow:          {"amount-overflow", "Amount overflow", http.StatusUnprocessableEntity},
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
	default:
		a.log.ErrorContext(r.Context(), "orders: command failed", "err", err, "request_id", httpapi.RequestIDFrom(r.Context()))
		httpapi.WriteProblem(w, r, httpapi.Unexpected(err))
	}
}
