// Package api is the catalog's HTTP command and query API (directory
// adapters/http; named api so it does not shadow net/http). Errors are
// RFC 9457 problems; every command is validated before anything is stored;
// command routes honour Idempotency-Key; command answers carry a
// Consistency-Token (events/consistency: the version the product's stream
// reached, for a query to wait on). openapi.json describes exactly the
// routes Register mounts (a test holds the two together).
//
// A command's id is, in order: the Idempotency-Key header (scoped to the
// method and path, so one key reused on two endpoints names two commands),
// the body's command_id (global: the caller promises uniqueness, as the
// seed tool does with "seed-list-<sku>"), or a fresh KSUID.
package api

import (
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/segmentio/ksuid"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consistency"
	"github.com/keel-commerce/keel/services/carts/catalog/app"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/idempotency"
)

// OpenAPI is the API's OpenAPI 3.0 document, served at /openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// HeaderReplayed is "true" on the answer to a command id decided before
// (the command changed nothing this time).
const HeaderReplayed = "X-Keel-Command-Replayed"

// Route is one routed endpoint.
type Route struct{ Method, Path string }

// Routes lists the API's endpoints (ops routes excluded) as Register mounts them.
var Routes = []Route{
	{"POST", "/products"},
	{"GET", "/products"},
	{"GET", "/products/{sku}"},
	{"POST", "/products/{sku}/price"},
	{"POST", "/products/{sku}/delist"},
}

// API serves the catalog. Safe for concurrent use.
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
	mux.Handle("POST /products", cmd(a.list))
	mux.HandleFunc("GET /products", a.products)
	mux.HandleFunc("GET /products/{sku}", a.product)
	mux.Handle("POST /products/{sku}/price", cmd(a.changePrice))
	mux.Handle("POST /products/{sku}/delist", cmd(a.delist))
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
	if m.AmountMinor == nil {
		errs.Add(field+".amount_minor", "is required")
	} else if *m.AmountMinor < 0 {
		errs.Add(field+".amount_minor", "must not be negative")
	}
	if !currency(m.Currency) {
		errs.Add(field+".currency", "must be a 3-letter upper-case ISO 4217 code, e.g. EUR")
	}
}

func (m *Money) app() app.Money { return app.Money{AmountMinor: *m.AmountMinor, Currency: m.Currency} }

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

// ListRequest is the body of POST /products.
type ListRequest struct {
	CommandID string `json:"command_id,omitempty"`
	SKU       string `json:"sku"`
	Name      string `json:"name"`
	UnitPrice *Money `json:"unit_price"`
}

// Validate implements httpapi.Validator.
func (r *ListRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	errs.ID("command_id", r.CommandID, false)
	errs.SKU("sku", r.SKU, true)
	errs.Text("name", r.Name, httpapi.MaxName, true)
	r.UnitPrice.validate("unit_price", &errs)
	return errs
}

// PriceRequest is the body of POST /products/{sku}/price.
type PriceRequest struct {
	CommandID string `json:"command_id,omitempty"`
	UnitPrice *Money `json:"unit_price"`
}

// Validate implements httpapi.Validator.
func (r *PriceRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	errs.ID("command_id", r.CommandID, false)
	r.UnitPrice.validate("unit_price", &errs)
	return errs
}

// DelistRequest is the (optional) body of POST /products/{sku}/delist.
type DelistRequest struct {
	CommandID string `json:"command_id,omitempty"`
}

// Validate implements httpapi.Validator.
func (r *DelistRequest) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	errs.ID("command_id", r.CommandID, false)
	return errs
}

// ProductsPage is the answer of GET /products.
type ProductsPage struct {
	Products []app.Product `json:"products"`
	// Next is the "after" of the next page; empty on the last page.
	Next string `json:"next,omitempty"`
}

func commandID(r *http.Request, fromBody string) string {
	if k := r.Header.Get(idempotency.Header); k != "" {
		return k + " " + r.Method + " " + r.URL.Path
	}
	if fromBody != "" {
		return fromBody
	}
	return ksuid.New().String()
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	var req ListRequest
	if p := httpapi.Decode(w, r, &req); p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	res, err := a.svc.List(r.Context(), app.List{CommandID: commandID(r, req.CommandID), SKU: req.SKU, Name: req.Name, UnitPrice: req.UnitPrice.app()})
	a.answer(w, r, req.SKU, res, err, http.StatusCreated)
}

func (a *API) changePrice(w http.ResponseWriter, r *http.Request) {
	var req PriceRequest
	if p := httpapi.Decode(w, r, &req); p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	sku := r.PathValue("sku")
	res, err := a.svc.ChangePrice(r.Context(), app.ChangePrice{CommandID: commandID(r, req.CommandID), SKU: sku, UnitPrice: req.UnitPrice.app()})
	a.answer(w, r, sku, res, err, http.StatusOK)
}

func (a *API) delist(w http.ResponseWriter, r *http.Request) {
	var req DelistRequest
	if r.ContentLength != 0 {
		if p := httpapi.Decode(w, r, &req); p != nil {
			httpapi.WriteProblem(w, r, p)
			return
		}
	}
	sku := r.PathValue("sku")
	res, err := a.svc.Delist(r.Context(), app.Delist{CommandID: commandID(r, req.CommandID), SKU: sku})
	a.answer(w, r, sku, res, err, http.StatusOK)
}

// answer maps a command's outcome to HTTP: the product as it now is, or a
// problem.
func (a *API) answer(w http.ResponseWriter, r *http.Request, sku string, res command.Result, err error, status int) {
	if err != nil {
		a.problem(w, r, err)
		return
	}
	p, err := a.svc.Product(r.Context(), sku)
	if err != nil {
		a.problem(w, r, err)
		return
	}
	if tok := consistency.New("catalog", res.Streams); !tok.IsZero() {
		w.Header().Set(consistency.Header, tok.String())
	}
	w.Header().Set("Location", "/products/"+sku)
	if res.Replayed {
		w.Header().Set(HeaderReplayed, "true")
	}
	if err := httpapi.WriteJSON(w, status, p); err != nil {
		a.log.WarnContext(r.Context(), "catalog: write response", "err", err)
	}
}

func (a *API) product(w http.ResponseWriter, r *http.Request) {
	p, err := a.svc.Product(r.Context(), r.PathValue("sku"))
	if err != nil {
		a.problem(w, r, err)
		return
	}
	_ = httpapi.WriteJSON(w, http.StatusOK, p)
}

func (a *API) products(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 100
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > app.MaxPage {
			httpapi.WriteProblem(w, r, httpapi.Invalid([]httpapi.FieldError{{Field: "limit", Message: fmt.Sprintf("must be an integer in 1..%d", app.MaxPage)}}))
			return
		}
		limit = n
	}
	var errs httpapi.FieldErrors
	if errs.SKU("after", q.Get("after"), false); len(errs) > 0 {
		httpapi.WriteProblem(w, r, httpapi.BadParams(errs))
		return
	}
	list, err := a.svc.Products(r.Context(), q.Get("after"), limit)
	if err != nil {
		a.problem(w, r, err)
		return
	}
	page := ProductsPage{Products: list}
	if len(list) == limit {
		page.Next = list[len(list)-1].SKU
	}
	_ = httpapi.WriteJSON(w, http.StatusOK, page)
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
		p := &httpapi.Problem{Status: http.StatusConflict, Detail: rej.Detail, Extensions: map[string]any{"code": rej.Code}}
		switch rej.Code {
		case app.CodeAlreadyListed:
			p.Type, p.Title = httpapi.ProblemBase+"already-listed", "Product already listed"
		case app.CodeNotListed:
			p.Type, p.Title = httpapi.ProblemBase+"not-listed", "Product not listed"
		case app.CodeCurrencyMismatch:
			p.Type, p.Title, p.Status = httpapi.ProblemBase+"currency-mismatch", "Currency mismatch", http.StatusUnprocessableEntity
		default:
			p.Type, p.Title, p.Status = httpapi.TypeValidation, "Invalid request", http.StatusUnprocessableEntity
		}
		httpapi.WriteProblem(w, r, p)
	default:
		a.log.ErrorContext(r.Context(), "catalog: command failed", "err", err, "request_id", httpapi.RequestIDFrom(r.Context()))
		httpapi.WriteProblem(w, r, httpapi.Unexpected(err))
	}
}
