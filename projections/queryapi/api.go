// Package queryapi is the HTTP API over the read models: JSON, cursor
// pagination, filters, and read-your-writes through the Consistency-Token
// a command's answer carries.
//
// Reads without a token answer at once from the active copy and may be a
// little stale. A read with a token (header Consistency-Token or query
// parameter consistency_token) first waits, up to ?wait= (default 2s, at
// most 30s), until the read model has applied the token's events; if it
// has not by then, the answer is a 503 problem of type read-model-behind
// that says, per stream, which version it has and which the token needs,
// with Retry-After.
package queryapi

import (
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/keel-commerce/keel/events/consistency"
	"github.com/keel-commerce/keel/projections/analytics"
	"github.com/keel-commerce/keel/projections/cartview"
	"github.com/keel-commerce/keel/projections/checkoutstatus"
	"github.com/keel-commerce/keel/projections/orderdetail"
	"github.com/keel-commerce/keel/projections/orderhistory"
	"github.com/keel-commerce/keel/projections/readmodel"
	"github.com/keel-commerce/keel/projections/stockavailability"
	"github.com/keel-commerce/keel/services/kit/httpapi"
)

// OpenAPI is the API's description, served at /openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// Problem types of this API.
const (
	TypeBehind   = httpapi.ProblemBase + "read-model-behind"
	TypeNoCopy   = httpapi.ProblemBase + "read-model-not-built"
	TypeBadToken = httpapi.ProblemBase + "consistency-token-invalid"
)

// Route is a method and a path pattern.
type Route struct{ Method, Path string }

// Routes are the API's routes (the ops routes aside).
var Routes = []Route{
	{"GET", "/orders"},
	{"GET", "/orders/{id}"},
	{"GET", "/customers/{id}/orders"},
	{"GET", "/carts"},
	{"GET", "/carts/{id}"},
	{"GET", "/checkouts"},
	{"GET", "/checkouts/{id}"},
	{"GET", "/stock/{sku}"},
	{"GET", "/analytics/sales"},
	{"GET", "/analytics/top-skus"},
	{"GET", "/analytics/funnel"},
	{"GET", "/projections"},
}

// Default and maximum of ?wait=.
const (
	DefaultWait = 2 * time.Second
	MaxWait     = httpapi.MaxWait
)

// API serves the read models of the projections database.
type API struct {
	pool   *pgxpool.Pool
	waiter *readmodel.Waiter
	log    *slog.Logger
}

// New returns the API. The waiter must be running for tokens to be
// answered promptly (without it, waits fall back to a slow poll).
func New(pool *pgxpool.Pool, waiter *readmodel.Waiter, log *slog.Logger) *API {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &API{pool: pool, waiter: waiter, log: log}
}

// Register mounts the routes on mux.
func (a *API) Register(mux *http.ServeMux) {
	h := map[string]http.HandlerFunc{
		"/orders":                a.read(orderhistory.New(), a.listOrders),
		"/orders/{id}":           a.read(orderdetail.New(), a.getOrder),
		"/customers/{id}/orders": a.read(orderhistory.New(), a.listOrders),
		"/carts":                 a.read(cartview.New(), a.listCarts),
		"/carts/{id}":            a.read(cartview.New(), a.getCart),
		"/checkouts":             a.read(checkoutstatus.New(), a.listCheckouts),
		"/checkouts/{id}":        a.read(checkoutstatus.New(), a.getCheckout),
		"/stock/{sku}":           a.read(stockavailability.New(), a.getStock),
		"/analytics/sales":       a.read(analytics.New(), a.sales),
		"/analytics/top-skus":    a.read(analytics.New(), a.topSKUs),
		"/analytics/funnel":      a.read(analytics.New(), a.funnel),
		"/projections":           a.projections,
	}
	for _, r := range Routes {
		mux.HandleFunc(r.Method+" "+r.Path, h[r.Path])
	}
}

// query answers one read from a copy's schema: a value to write as JSON,
// or a problem.
type query func(r *http.Request, schema string) (any, *httpapi.Problem, error)

// read wraps a query with the token wait and the active copy lookup.
func (a *API) read(p readmodel.Projection, q query) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if prob := httpapi.EmptyParams(r); prob != nil {
			httpapi.WriteProblem(w, r, prob)
			return
		}
		if prob := a.awaitToken(r, p); prob != nil {
			if prob.Status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "1")
			}
			httpapi.WriteProblem(w, r, prob)
			return
		}
		g, err := readmodel.Active(r.Context(), a.pool, p.Name())
		if errors.Is(err, readmodel.ErrNoActive) {
			w.Header().Set("Retry-After", "5")
			httpapi.WriteProblem(w, r, &httpapi.Problem{Type: TypeNoCopy, Title: "Read model not built", Status: http.StatusServiceUnavailable,
				Detail: fmt.Sprintf("read model %s has no copy yet: its builder has not started", p.Name())})
			return
		}
		if err != nil {
			a.internal(w, r, err)
			return
		}
		v, prob, err := q(r, g.Schema)
		switch {
		case err != nil:
			a.internal(w, r, err)
		case prob != nil:
			httpapi.WriteProblem(w, r, prob)
		default:
			w.Header().Set("Read-Model-Copy", g.Schema)
			_ = httpapi.WriteJSON(w, http.StatusOK, v)
		}
	}
}

// awaitToken waits for the request's token, if any.
func (a *API) awaitToken(r *http.Request, p readmodel.Projection) *httpapi.Problem {
	raw := r.Header.Get(consistency.Header)
	if raw == "" {
		raw = r.URL.Query().Get("consistency_token")
	}
	wait := DefaultWait
	if s := r.URL.Query().Get("wait"); s != "" {
		d, err := httpapi.ParseWait(s)
		if err != nil {
			return httpapi.BadRequest(err.Error(),
				httpapi.FieldError{Field: "wait", Message: "not a duration within 0s..30s"})
		}
		wait = d
	}
	if raw == "" {
		return nil
	}
	tok, err := consistency.Parse(raw)
	if err != nil {
		return &httpapi.Problem{Type: TypeBadToken, Title: "Invalid consistency token", Status: http.StatusBadRequest,
			Detail: err.Error() + "; pass the Consistency-Token header of a command's answer as it is"}
	}
	err = a.waiter.Wait(r.Context(), p, tok, wait)
	var behind *readmodel.BehindError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, readmodel.ErrTokenContext):
		return &httpapi.Problem{Type: TypeBadToken, Title: "Consistency token of another context", Status: http.StatusBadRequest, Detail: err.Error()}
	case errors.As(err, &behind):
		streams := map[string]map[string]int64{}
		for s, v := range behind.Streams {
			streams[s] = map[string]int64{"applied_version": v[0], "wanted_version": v[1]}
		}
		return &httpapi.Problem{Type: TypeBehind, Title: "Read model behind", Status: http.StatusServiceUnavailable, Detail: err.Error(),
			Extensions: map[string]any{"read_model": p.Name(), "waited_ms": behind.Waited.Milliseconds(), "streams": streams}}
	default:
		a.log.ErrorContext(r.Context(), "wait for token", "err", err)
		return httpapi.Unexpected(err)
	}
}

func (a *API) internal(w http.ResponseWriter, r *http.Request, err error) {
	a.log.ErrorContext(r.Context(), "query", "path", r.URL.Path, "err", err)
	httpapi.WriteProblem(w, r, httpapi.Unexpected(err))
}

// Page is a page of a list.
type Page[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

func page[T any](items []T, next readmodel.Cursor) Page[T] {
	if items == nil {
		items = []T{}
	}
	return Page[T]{Items: items, NextCursor: next.String()}
}

// listParams reads the parameters every list takes.
type listParams struct {
	status, customer, cart, sku string
	from, to                    time.Time
	cursor                      readmodel.Cursor
	limit                       int
}

func parseList(r *http.Request, statuses ...string) (listParams, *httpapi.Problem) {
	q := r.URL.Query()
	var p listParams
	var errs httpapi.FieldErrors
	p.status, p.customer, p.cart, p.sku = q.Get("status"), q.Get("customer_id"), q.Get("cart_id"), q.Get("sku")
	if p.status != "" && len(statuses) > 0 && !slices.Contains(statuses, p.status) {
		errs = append(errs, httpapi.FieldError{Field: "status", Message: "one of " + strings.Join(statuses, ", ")})
	}
	errs.ID("customer_id", p.customer, false)
	errs.ID("cart_id", p.cart, false)
	errs.SKU("sku", p.sku, false)
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"from", &p.from}, {"to", &p.to}} {
		if s := q.Get(f.name); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				errs = append(errs, httpapi.FieldError{Field: f.name, Message: "an RFC 3339 time, such as 2026-11-27T10:00:00Z"})
			}
			*f.dst = t
		}
	}
	if !p.from.IsZero() && !p.to.IsZero() && !p.from.Before(p.to) {
		errs = append(errs, httpapi.FieldError{Field: "to", Message: "after from"})
	}
	p.limit = 50
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 500 {
			errs = append(errs, httpapi.FieldError{Field: "limit", Message: "an integer from 1 to 500"})
		}
		p.limit = n
	}
	c, err := readmodel.ParseCursor(q.Get("cursor"))
	if err == nil && c.ID != "" && !httpapi.ValidID(c.ID) { // not one we made
		err = readmodel.ErrBadCursor
	}
	if err != nil {
		errs = append(errs, httpapi.FieldError{Field: "cursor", Message: err.Error()})
	}
	p.cursor = c
	if len(errs) > 0 {
		return p, httpapi.BadParams(errs)
	}
	return p, nil
}

func (a *API) listOrders(r *http.Request, schema string) (any, *httpapi.Problem, error) {
	p, prob := parseList(r, "pending", "confirmed", "paid", "shipped", "cancelled")
	if prob != nil {
		return nil, prob, nil
	}
	if id := r.PathValue("id"); id != "" {
		p.customer = id
	}
	list, next, err := orderhistory.List(r.Context(), a.pool, schema,
		orderhistory.Filter{CustomerID: p.customer, Status: p.status, From: p.from, To: p.to}, p.cursor, p.limit)
	return page(list, next), nil, err
}

func (a *API) getOrder(r *http.Request, schema string) (any, *httpapi.Problem, error) {
	return found(orderdetail.Get(r.Context(), a.pool, schema, r.PathValue("id")))("order " + r.PathValue("id"))
}

func (a *API) listCarts(r *http.Request, schema string) (any, *httpapi.Problem, error) {
	p, prob := parseList(r, "open", "checking_out", "closed", "abandoned")
	if prob != nil {
		return nil, prob, nil
	}
	list, next, err := cartview.List(r.Context(), a.pool, schema,
		cartview.Filter{CustomerID: p.customer, Status: p.status, From: p.from, To: p.to}, p.cursor, p.limit)
	return page(list, next), nil, err
}

func (a *API) getCart(r *http.Request, schema string) (any, *httpapi.Problem, error) {
	return found(cartview.Get(r.Context(), a.pool, schema, r.PathValue("id")))("cart " + r.PathValue("id"))
}

func (a *API) listCheckouts(r *http.Request, schema string) (any, *httpapi.Problem, error) {
	p, prob := parseList(r, "running", "compensating", "completed", "failed", "timed_out")
	if prob != nil {
		return nil, prob, nil
	}
	list, next, err := checkoutstatus.List(r.Context(), a.pool, schema,
		checkoutstatus.Filter{CustomerID: p.customer, CartID: p.cart, Status: p.status, From: p.from, To: p.to}, p.cursor, p.limit)
	return page(list, next), nil, err
}

func (a *API) getCheckout(r *http.Request, schema string) (any, *httpapi.Problem, error) {
	return found(checkoutstatus.Get(r.Context(), a.pool, schema, r.PathValue("id")))("checkout " + r.PathValue("id"))
}

// Stock is a SKU's availability: per warehouse and in total.
type Stock struct {
	stockavailability.Total
	Warehouses []stockavailability.Level `json:"warehouses"`
}

func (a *API) getStock(r *http.Request, schema string) (any, *httpapi.Problem, error) {
	sku := r.PathValue("sku")
	levels, total, err := stockavailability.SKU(r.Context(), a.pool, schema, sku)
	if err != nil {
		return nil, nil, err
	}
	if len(levels) == 0 {
		return nil, httpapi.NotFound(fmt.Sprintf("SKU %s has no stock movements", sku)), nil
	}
	return Stock{Total: total, Warehouses: levels}, nil, nil
}

// found maps a Get's answer to a value or a 404 naming what.
func found[T any](v T, ok bool, err error) func(what string) (any, *httpapi.Problem, error) {
	return func(what string) (any, *httpapi.Problem, error) {
		switch {
		case err != nil:
			return nil, nil, err
		case !ok:
			return nil, httpapi.NotFound(what + " is not in the read model"), nil
		}
		return v, nil, nil
	}
}

// projectionView is a copy as /projections lists it.
type projectionView struct {
	Projection  string     `json:"projection"`
	Generation  int        `json:"generation"`
	Schema      string     `json:"schema"`
	State       string     `json:"state"`
	EventsRead  int64      `json:"events_read,omitempty"`
	ActivatedAt *time.Time `json:"activated_at,omitempty"`
}

func (a *API) projections(w http.ResponseWriter, r *http.Request) {
	gens, err := readmodel.Generations(r.Context(), a.pool)
	if err != nil {
		a.internal(w, r, err)
		return
	}
	out := make([]projectionView, 0, len(gens))
	for _, g := range gens {
		v := projectionView{Projection: g.Projection, Generation: g.Number, Schema: g.Schema, State: g.State, EventsRead: g.EventsRead}
		if !g.ActivatedAt.IsZero() {
			at := g.ActivatedAt
			v.ActivatedAt = &at
		}
		out = append(out, v)
	}
	_ = httpapi.WriteJSON(w, http.StatusOK, map[string]any{"items": out})
}

// hourRange reads the required from/to of the analytics queries.
func hourRange(r *http.Request) (listParams, *httpapi.Problem) {
	p, prob := parseList(r)
	if prob == nil && (p.from.IsZero() || p.to.IsZero()) {
		prob = httpapi.BadRequest("from and to are required: an hour range such as from=2026-11-27T00:00:00Z&to=2026-11-28T00:00:00Z",
			httpapi.FieldError{Field: "from", Message: "required"}, httpapi.FieldError{Field: "to", Message: "required"})
	}
	return p, prob
}

// rangeProblem turns the analytics queries' range refusal into a 400.
func rangeProblem(err error) (*httpapi.Problem, error) {
	if errors.Is(err, analytics.ErrRange) {
		return httpapi.BadRequest(err.Error(), httpapi.FieldError{Field: "to", Message: err.Error()}), nil
	}
	return nil, err
}

func (a *API) sales(r *http.Request, schema string) (any, *httpapi.Problem, error) {
	p, prob := hourRange(r)
	if prob != nil {
		return nil, prob, nil
	}
	after, err := analytics.ParseSalesCursor(r.URL.Query().Get("cursor"))
	if err != nil {
		return nil, httpapi.BadRequest(err.Error(), httpapi.FieldError{Field: "cursor", Message: err.Error()}), nil
	}
	list, next, err := analytics.SKUHourly(r.Context(), a.pool, schema, analytics.SalesFilter{SKU: p.sku, From: p.from, To: p.to}, after, p.limit)
	if err != nil {
		prob, err := rangeProblem(err)
		return nil, prob, err
	}
	if list == nil {
		list = []analytics.SKUHour{}
	}
	return Page[analytics.SKUHour]{Items: list, NextCursor: next.String()}, nil, nil
}

func (a *API) topSKUs(r *http.Request, schema string) (any, *httpapi.Problem, error) {
	p, prob := hourRange(r)
	if prob != nil {
		return nil, prob, nil
	}
	list, err := analytics.TopSKUs(r.Context(), a.pool, schema, p.from, p.to, p.limit)
	if err != nil {
		prob, err := rangeProblem(err)
		return nil, prob, err
	}
	return page(list, readmodel.Cursor{}), nil, nil
}

func (a *API) funnel(r *http.Request, schema string) (any, *httpapi.Problem, error) {
	p, prob := hourRange(r)
	if prob != nil {
		return nil, prob, nil
	}
	list, err := analytics.Funnel(r.Context(), a.pool, schema, p.from, p.to)
	if err != nil {
		prob, err := rangeProblem(err)
		return nil, prob, err
	}
	return page(list, readmodel.Cursor{}), nil, nil
}
