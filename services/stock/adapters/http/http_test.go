package stockhttp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keel-commerce/keel/events/consistency"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
	"github.com/keel-commerce/keel/services/kit/idempotency"
	stockhttp "github.com/keel-commerce/keel/services/stock/adapters/http"
	"github.com/keel-commerce/keel/services/stock/app"
)

type env struct {
	t    *testing.T
	h    http.Handler
	mux  *http.ServeMux
	svc  *app.Service
	pool *pgxpool.Pool
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func setup(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	pool := testenv.Pool(t)
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	svc, err := app.New(ctx, st, app.Config{Now: func() time.Time { return t0 },
		TTLByPaymentMethod: map[string]time.Duration{"invoice": 72 * time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	if err := idempotency.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	keys, err := idempotency.New(pool, idempotency.Config{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	stockhttp.New(svc, keys, nil).Register(mux)
	httpapi.Ops{OpenAPI: stockhttp.OpenAPI, Registry: prometheus.NewRegistry()}.Register(mux)
	return &env{t: t, h: openapitest.New(t, stockhttp.OpenAPI).Handler(httpapi.Wrap(mux, nil, nil)), mux: mux, svc: svc, pool: pool}
}

type req struct {
	method, path, body string
	ctype              string // default application/json; "-" for none
	key                string // Idempotency-Key
}

func (e *env) do(r req) *httptest.ResponseRecorder {
	e.t.Helper()
	var body *strings.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	var hr *http.Request
	if body != nil {
		hr = httptest.NewRequest(r.method, r.path, body)
	} else {
		hr = httptest.NewRequest(r.method, r.path, nil)
	}
	switch r.ctype {
	case "":
		if r.method == http.MethodPost {
			hr.Header.Set("Content-Type", "application/json")
		}
	case "-":
	default:
		hr.Header.Set("Content-Type", r.ctype)
	}
	if r.key != "" {
		hr.Header.Set(idempotency.Header, r.key)
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, hr)
	return rec
}

func (e *env) post(path, body string) *httptest.ResponseRecorder {
	e.t.Helper()
	return e.do(req{method: http.MethodPost, path: path, body: body})
}

// count returns a row count of table.
func (e *env) count(table string) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func mustStatus(t *testing.T, rec *httptest.ResponseRecorder, want int) {
	t.Helper()
	if rec.Code != want {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, want, rec.Body)
	}
}

func problem(t *testing.T, rec *httptest.ResponseRecorder) httpapi.Problem {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != httpapi.ContentTypeProblem {
		t.Fatalf("Content-Type = %q, want %s; body %s", ct, httpapi.ContentTypeProblem, rec.Body)
	}
	var p httpapi.Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem body %s: %v", rec.Body, err)
	}
	return p
}

func fields(p httpapi.Problem) []string {
	var out []string
	for _, e := range p.Errors {
		if !slices.Contains(out, e.Field) {
			out = append(out, e.Field)
		}
	}
	slices.Sort(out)
	return out
}

func TestBadInputIsRefusedAndNothingStored(t *testing.T) {
	e := setup(t)
	mustStatus(t, e.post("/stock/SKU-1/receive", `{"warehouse_id":"wh-1","quantity":10}`), http.StatusOK)

	lines101 := make([]string, 101)
	for i := range lines101 {
		lines101[i] = fmt.Sprintf(`{"sku":"S-%d","quantity":1}`, i)
	}
	big := `{"warehouse_id":"wh-1","quantity":1,"reference":"` + strings.Repeat("x", 70<<10) + `"}`
	cases := []struct {
		name   string
		req    req
		status int
		typ    string
		detail string   // substring of the detail
		fields []string // fields named in errors, sorted
		ext    map[string]any
	}{
		{name: "malformed JSON", req: req{method: "POST", path: "/stock/SKU-1/receive", body: `{"warehouse_id": "wh-1", "quantity": }`},
			status: 400, typ: httpapi.TypeMalformed, detail: "malformed JSON at byte offset"},
		{name: "truncated JSON", req: req{method: "POST", path: "/reservations", body: `{"order_id": "o-1", "lines": [`},
			status: 400, typ: httpapi.TypeMalformed, detail: "before the JSON value is complete"},
		{name: "unknown field", req: req{method: "POST", path: "/stock/SKU-1/receive", body: `{"warehouse_id":"wh-1","quantity":1,"qty":2}`},
			status: 400, typ: httpapi.TypeMalformed, detail: `unknown field "qty"`, fields: []string{"qty"}},
		{name: "unknown field in a line", req: req{method: "POST", path: "/reservations", body: `{"order_id":"o-1","lines":[{"sku":"SKU-1","quantity":1,"price":3}]}`},
			status: 400, typ: httpapi.TypeMalformed, detail: `unknown field "price"`},
		{name: "wrong type", req: req{method: "POST", path: "/stock/SKU-1/receive", body: `{"warehouse_id":"wh-1","quantity":"3"}`},
			status: 400, typ: httpapi.TypeMalformed, detail: `field "quantity" must be an integer`, fields: []string{"quantity"}},
		{name: "wrong type of lines", req: req{method: "POST", path: "/reservations", body: `{"order_id":"o-1","lines":{"sku":"SKU-1"}}`},
			status: 400, typ: httpapi.TypeMalformed, detail: `field "lines" must be an array`},
		{name: "fractional quantity", req: req{method: "POST", path: "/reservations", body: `{"order_id":"o-1","lines":[{"sku":"SKU-1","quantity":1.5}]}`},
			status: 400, typ: httpapi.TypeMalformed, detail: "must be an integer"},
		{name: "missing body", req: req{method: "POST", path: "/stock/SKU-1/receive"},
			status: 400, typ: httpapi.TypeMalformed, detail: "the request body is empty"},
		{name: "null reference", req: req{method: "POST", path: "/stock/SKU-1/receive", body: `{"warehouse_id":"wh-1","quantity":1,"reference":null}`},
			status: 400, typ: httpapi.TypeMalformed, detail: `field "reference" is null`, fields: []string{"reference"}},
		{name: "null note", req: req{method: "POST", path: "/stock/SKU-1/adjust", body: `{"warehouse_id":"wh-1","delta":1,"note":null}`},
			status: 400, typ: httpapi.TypeMalformed, detail: `field "note" is null`, fields: []string{"note"}},
		{name: "null body", req: req{method: "POST", path: "/reservations", body: `null`},
			status: 400, typ: httpapi.TypeMalformed, detail: "the request body is null"},
		{name: "two values", req: req{method: "POST", path: "/stock/SKU-1/receive", body: `{"warehouse_id":"wh-1","quantity":1}{}`},
			status: 400, typ: httpapi.TypeMalformed, detail: "unexpected data after the JSON value"},
		{name: "oversized", req: req{method: "POST", path: "/stock/SKU-1/receive", body: big},
			status: 413, typ: httpapi.TypeTooLarge, detail: "exceeds the limit of 65536 bytes"},
		{name: "oversized with key", req: req{method: "POST", path: "/stock/SKU-1/receive", body: big, key: "k-big"},
			status: 413, typ: httpapi.TypeTooLarge, detail: "exceeds the limit"},
		{name: "text/plain", req: req{method: "POST", path: "/stock/SKU-1/receive", body: `{"warehouse_id":"wh-1","quantity":1}`, ctype: "text/plain"},
			status: 415, typ: httpapi.TypeUnsupportedMediaType, detail: `"text/plain" is not supported`},
		{name: "no content type", req: req{method: "POST", path: "/reservations", body: `{}`, ctype: "-"},
			status: 415, typ: httpapi.TypeUnsupportedMediaType, detail: "Content-Type header is missing"},
		{name: "zero quantity", req: req{method: "POST", path: "/stock/SKU-1/receive", body: `{"warehouse_id":"wh-1","quantity":0}`},
			status: 422, typ: httpapi.TypeValidation, detail: "must be a positive integer, got 0", fields: []string{"quantity"}},
		{name: "negative quantity", req: req{method: "POST", path: "/stock/SKU-1/receive", body: `{"warehouse_id":"wh-1","quantity":-4}`},
			status: 422, typ: httpapi.TypeValidation, detail: "got -4", fields: []string{"quantity"}},
		{name: "missing fields", req: req{method: "POST", path: "/stock/SKU-1/receive", body: `{}`},
			status: 422, typ: httpapi.TypeValidation, detail: "2 invalid fields: warehouse_id, quantity", fields: []string{"quantity", "warehouse_id"}},
		// A path parameter is refused before the body is read.
		{name: "bad sku in path", req: req{method: "POST", path: "/stock/%2Fetc%20x/receive", body: `{"warehouse_id":"wh 1","quantity":1}`},
			status: 400, typ: httpapi.TypeMalformed, detail: `path parameter "sku"`, fields: []string{"sku"}},
		{name: "NUL in a path parameter", req: req{method: "POST", path: "/reservations/a%00b/release", body: `{"reason":"manual"}`},
			status: 400, typ: httpapi.TypeMalformed, detail: `path parameter "order_id" must not contain control characters`, fields: []string{"order_id"}},
		{name: "sku longer than stock's pattern", req: req{method: "POST", path: "/stock/" + strings.Repeat("s", 65) + "/receive", body: `{"warehouse_id":"wh-1","quantity":1}`},
			status: 422, typ: httpapi.TypeValidation, detail: "sku", fields: []string{"sku"}},
		{name: "adjust zero delta, bad reason", req: req{method: "POST", path: "/stock/SKU-1/adjust", body: `{"warehouse_id":"wh-1","delta":0,"reason":"stolen"}`},
			status: 422, typ: httpapi.TypeValidation, detail: "delta", fields: []string{"delta", "reason"}},
		{name: "adjust missing", req: req{method: "POST", path: "/stock/SKU-1/adjust", body: `{}`},
			status: 422, typ: httpapi.TypeValidation, fields: []string{"delta", "reason", "warehouse_id"}},
		{name: "reserve missing fields", req: req{method: "POST", path: "/reservations", body: `{}`},
			status: 422, typ: httpapi.TypeValidation, detail: "order_id, lines", fields: []string{"lines", "order_id"}},
		{name: "reserve bad lines", req: req{method: "POST", path: "/reservations",
			body: `{"order_id":"o-1","lines":[{"sku":"SKU-1","quantity":0},{"sku":"SKU-2","quantity":-1},{"sku":"bad sku!","quantity":1},{"sku":"SKU-1","quantity":1},{"quantity":2}]}`},
			status: 422, typ: httpapi.TypeValidation,
			fields: []string{"lines.0.quantity", "lines.1.quantity", "lines.2.sku", "lines.3.sku", "lines.4.sku"}},
		{name: "reserve too many lines", req: req{method: "POST", path: "/reservations", body: `{"order_id":"o-1","lines":[` + strings.Join(lines101, ",") + `]}`},
			status: 422, typ: httpapi.TypeValidation, detail: "has 101 lines; at most 100", fields: []string{"lines"}},
		{name: "reserve bad ttl and method", req: req{method: "POST", path: "/reservations", body: `{"order_id":"o-1","payment_method":"Card!","ttl_seconds":0,"lines":[{"sku":"SKU-1","quantity":1}]}`},
			status: 422, typ: httpapi.TypeValidation, fields: []string{"payment_method", "ttl_seconds"}},
		{name: "release without reason", req: req{method: "POST", path: "/reservations/o-1/release", body: `{}`},
			status: 422, typ: httpapi.TypeValidation, detail: "reason", fields: []string{"reason"}},
		{name: "release unknown order", req: req{method: "POST", path: "/reservations/o-404/release", body: `{"reason":"order_cancelled"}`},
			status: 404, typ: stockhttp.TypeUnknownOrder, detail: "no reservation was ever made for order o-404"},
		{name: "commit unknown order", req: req{method: "POST", path: "/reservations/o-404/commit", ctype: "-"},
			status: 404, typ: stockhttp.TypeUnknownOrder, detail: "o-404"},
		{name: "commit duplicate ids", req: req{method: "POST", path: "/reservations/o-1/commit", body: `{"reservation_ids":["r1","r1"]}`},
			status: 422, typ: httpapi.TypeValidation, fields: []string{"reservation_ids.1"}},
		{name: "insufficient stock", req: req{method: "POST", path: "/reservations", body: `{"order_id":"o-1","lines":[{"sku":"SKU-1","quantity":11}]}`},
			status: 409, typ: stockhttp.TypeInsufficientStock, detail: "requested 11, available 10",
			ext: map[string]any{"available": 10.0, "requested": 11.0, "sku": "SKU-1"}},
		{name: "unknown sku reserved", req: req{method: "POST", path: "/reservations", body: `{"order_id":"o-2","lines":[{"sku":"NOPE","quantity":1}]}`},
			status: 404, typ: stockhttp.TypeUnknownSKU, detail: "NOPE"},
		{name: "adjust below on hand", req: req{method: "POST", path: "/stock/SKU-1/adjust", body: `{"warehouse_id":"wh-1","delta":-11,"reason":"lost"}`},
			status: 409, typ: stockhttp.TypeBelowReserved, detail: "10 on hand, 0 reserved",
			ext: map[string]any{"available": 10.0, "warehouse_id": "wh-1"}},
		{name: "get unknown sku", req: req{method: "GET", path: "/stock/NOPE"},
			status: 404, typ: stockhttp.TypeUnknownSKU, detail: "never been received"},
		{name: "get bad sku", req: req{method: "GET", path: "/stock/bad%20sku"},
			status: 400, typ: httpapi.TypeMalformed, fields: []string{"sku"}},
		{name: "bad idempotency key", req: req{method: "POST", path: "/stock/SKU-1/receive", body: `{"warehouse_id":"wh-1","quantity":1}`, key: strings.Repeat("k", 300)},
			status: 400, typ: httpapi.TypeIdempotencyKeyInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			events, skus := e.count("events"), e.count("stock_order_skus")
			rec := e.do(c.req)
			mustStatus(t, rec, c.status)
			p := problem(t, rec)
			if p.Type != c.typ || p.Status != c.status {
				t.Errorf("problem type/status = %s/%d, want %s/%d", p.Type, p.Status, c.typ, c.status)
			}
			if !strings.Contains(p.Detail, c.detail) || p.Detail == "" {
				t.Errorf("detail %q does not say %q", p.Detail, c.detail)
			}
			if c.fields != nil && !slices.Equal(fields(p), c.fields) {
				t.Errorf("fields = %v, want %v (errors %+v)", fields(p), c.fields, p.Errors)
			}
			for k, v := range c.ext {
				if p.Extensions[k] != v {
					t.Errorf("extension %s = %v, want %v", k, p.Extensions[k], v)
				}
			}
			if rec.Header().Get(consistency.Header) != "" {
				t.Errorf("a refusal carries a Consistency-Token")
			}
			if n := e.count("events"); n != events {
				t.Errorf("events %d → %d: a refused request stored events", events, n)
			}
			if n := e.count("stock_order_skus"); n != skus {
				t.Errorf("stock_order_skus %d → %d", skus, n)
			}
		})
	}
	// Only the setup receive was ever decided (the refusals by the domain
	// are stored as refusals, with no events).
	if n := e.count("events"); n != 1 {
		t.Errorf("events = %d, want 1", n)
	}
	var accepted int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM processed_commands WHERE outcome = 'accepted'`).Scan(&accepted); err != nil {
		t.Fatal(err)
	}
	if accepted != 1 {
		t.Errorf("accepted commands = %d, want 1", accepted)
	}
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q; body %s", ct, rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("body %s: %v", rec.Body, err)
	}
	return v
}

// token checks the answer's Consistency-Token names exactly the stock
// streams of want at their versions, and returns it.
func token(t *testing.T, rec *httptest.ResponseRecorder, want map[string]int64) string {
	t.Helper()
	return testenv.ConsistencyToken(t, rec.Header(), "stock", want)
}

func TestReceiveReserveCommitGet(t *testing.T) {
	e := setup(t)
	mustStatus(t, e.post("/stock/SKU-1/receive", `{"warehouse_id":"wh-1","quantity":4,"reference":"po-1"}`), http.StatusOK)
	rec := e.post("/stock/SKU-1/receive", `{"warehouse_id":"wh-2","quantity":6,"command_id":"rcv-2"}`)
	mustStatus(t, rec, http.StatusOK)
	token(t, rec, map[string]int64{app.Stream("SKU-1"): 2})
	if got := decode[stockhttp.CommandResponse](t, rec); got.CommandID != "rcv-2" || got.SKU != "SKU-1" {
		t.Errorf("receive answered %+v", got)
	}

	rec = e.post("/reservations", `{"order_id":"o-1","checkout_id":"c-1","payment_method":"invoice","lines":[{"sku":"SKU-1","quantity":7}]}`)
	mustStatus(t, rec, http.StatusCreated)
	resTok := token(t, rec, map[string]int64{app.Stream("SKU-1"): 4}) // two reservations, one per warehouse
	res := decode[stockhttp.ReservationResponse](t, rec)
	if res.OrderID != "o-1" || !res.ExpiresAt.Equal(t0.Add(72*time.Hour)) || len(res.Lines) != 2 || res.CommandID == "" {
		t.Fatalf("reservation = %+v", res)
	}
	var total int64
	for _, l := range res.Lines {
		total += l.Quantity
	}
	if total != 7 {
		t.Errorf("reserved %d units, want 7 (split over two warehouses)", total)
	}

	rec = e.do(req{method: "GET", path: "/stock/SKU-1"})
	mustStatus(t, rec, http.StatusOK)
	if tok := token(t, rec, map[string]int64{app.Stream("SKU-1"): 4}); tok != resTok {
		t.Errorf("GET token %s, want the reservation's %s", tok, resTok)
	}
	st := decode[stockhttp.StockResponse](t, rec)
	if st.OnHand != 10 || st.Reserved != 7 || st.Available != 3 || len(st.Reservations) != 2 || len(st.Warehouses) != 2 || st.Version != 4 {
		t.Errorf("stock = %+v", st)
	}

	// Refusals against the reservation.
	rec = e.post("/reservations", `{"order_id":"o-1","lines":[{"sku":"SKU-1","quantity":1}]}`)
	mustStatus(t, rec, http.StatusConflict)
	if p := problem(t, rec); p.Type != stockhttp.TypeAlreadyReserved {
		t.Errorf("second reservation of o-1: %+v", p)
	}
	rec = e.post("/stock/SKU-1/adjust", `{"warehouse_id":"wh-1","delta":-1,"reason":"damaged"}`)
	mustStatus(t, rec, http.StatusConflict)
	if p := problem(t, rec); p.Type != stockhttp.TypeBelowReserved || p.Extensions["available"] != 0.0 {
		t.Errorf("adjust below reserved: %+v", p)
	}
	rec = e.post("/reservations/o-1/commit", `{"reservation_ids":["r-nope"]}`)
	mustStatus(t, rec, http.StatusNotFound)
	if p := problem(t, rec); p.Type != stockhttp.TypeUnknownReservation || !strings.Contains(p.Detail, "r-nope") {
		t.Errorf("commit of an unknown reservation: %+v", p)
	}

	rec = e.do(req{method: "POST", path: "/reservations/o-1/commit", ctype: "-"})
	mustStatus(t, rec, http.StatusOK)
	token(t, rec, map[string]int64{app.Stream("SKU-1"): 6})
	if got := decode[stockhttp.OrderCommandResponse](t, rec); got.OrderID != "o-1" {
		t.Errorf("commit answered %+v", got)
	}
	rec = e.post("/reservations/o-1/release", `{"reason":"order_cancelled"}`)
	mustStatus(t, rec, http.StatusNotFound)
	if p := problem(t, rec); p.Type != stockhttp.TypeUnknownReservation {
		t.Errorf("release after commit: %+v", p)
	}

	st = decode[stockhttp.StockResponse](t, e.do(req{method: "GET", path: "/stock/SKU-1"}))
	if st.OnHand != 3 || st.Reserved != 0 || st.Available != 3 || len(st.Reservations) != 0 {
		t.Errorf("after commit: %+v", st)
	}
	if n := e.count("events"); n != 6 { // 2 received, 2 reserved, 2 committed
		t.Errorf("events = %d, want 6", n)
	}

	// A second order, released.
	mustStatus(t, e.post("/reservations", `{"order_id":"o-2","lines":[{"sku":"SKU-1","quantity":3}],"ttl_seconds":60}`), http.StatusCreated)
	mustStatus(t, e.post("/reservations/o-2/release", `{"reason":"payment_failed"}`), http.StatusOK)
	st = decode[stockhttp.StockResponse](t, e.do(req{method: "GET", path: "/stock/SKU-1"}))
	if st.Available != 3 || st.Reserved != 0 {
		t.Errorf("after release: %+v", st)
	}
}

func TestIdempotencyKeyReplay(t *testing.T) {
	e := setup(t)
	body := `{"warehouse_id":"wh-1","quantity":5}`
	first := e.do(req{method: "POST", path: "/stock/SKU-1/receive", body: body, key: "key-1"})
	mustStatus(t, first, http.StatusOK)
	again := e.do(req{method: "POST", path: "/stock/SKU-1/receive", body: body, key: "key-1"})
	mustStatus(t, again, http.StatusOK)
	if !bytes.Equal(first.Body.Bytes(), again.Body.Bytes()) || again.Header().Get(idempotency.HeaderReplayed) != "true" ||
		again.Header().Get(consistency.Header) != first.Header().Get(consistency.Header) {
		t.Errorf("replay = %s %v, first = %s %v", again.Body, again.Header(), first.Body, first.Header())
	}
	if got := decode[stockhttp.CommandResponse](t, first); got.CommandID != "key-1 POST /stock/SKU-1/receive" {
		t.Errorf("command id = %q, want the Idempotency-Key scoped by method and path", got.CommandID)
	}
	other := e.do(req{method: "POST", path: "/stock/SKU-1/receive", body: `{"warehouse_id":"wh-1","quantity":6}`, key: "key-1"})
	mustStatus(t, other, http.StatusUnprocessableEntity)
	if p := problem(t, other); p.Type != httpapi.TypeIdempotencyKeyReused {
		t.Errorf("other body: %+v", p)
	}
	if n := e.count("events"); n != 1 {
		t.Errorf("events = %d, want 1", n)
	}

	// A refusal is replayed as well, even once the stock would allow it.
	res := `{"order_id":"o-1","lines":[{"sku":"SKU-1","quantity":8}]}`
	r1 := e.do(req{method: "POST", path: "/reservations", body: res, key: "key-2"})
	mustStatus(t, r1, http.StatusConflict)
	mustStatus(t, e.post("/stock/SKU-1/receive", `{"warehouse_id":"wh-1","quantity":5}`), http.StatusOK)
	r2 := e.do(req{method: "POST", path: "/reservations", body: res, key: "key-2"})
	mustStatus(t, r2, http.StatusConflict)
	if !bytes.Equal(r1.Body.Bytes(), r2.Body.Bytes()) {
		t.Errorf("replayed refusal differs: %s vs %s", r1.Body, r2.Body)
	}

	// Without a key, the body's command_id dedupes at the command layer.
	c1 := e.post("/reservations", `{"command_id":"cmd-9","order_id":"o-9","lines":[{"sku":"SKU-1","quantity":2}]}`)
	mustStatus(t, c1, http.StatusCreated)
	c2 := e.post("/reservations", `{"command_id":"cmd-9","order_id":"o-9","lines":[{"sku":"SKU-1","quantity":2}]}`)
	mustStatus(t, c2, http.StatusCreated)
	if !bytes.Equal(c1.Body.Bytes(), c2.Body.Bytes()) {
		t.Errorf("command_id replay differs: %s vs %s", c1.Body, c2.Body)
	}
	st := decode[stockhttp.StockResponse](t, e.do(req{method: "GET", path: "/stock/SKU-1"}))
	if st.OnHand != 10 || st.Reserved != 2 {
		t.Errorf("stock = %+v, want 10 on hand, 2 reserved", st)
	}
	if n := e.count("events"); n != 3 {
		t.Errorf("events = %d, want 3 (two receipts, one reservation)", n)
	}
}

// TestCommandIDReused: a body command_id names one command. Used again for
// a reservation, another SKU's adjustment or another quantity it is a 422
// command-id-reused naming the first command, and nothing is written; the
// same command again replays.
func TestCommandIDReused(t *testing.T) {
	e := setup(t)
	receive := `{"command_id":"c1","warehouse_id":"wh-1","quantity":5}`
	first := e.post("/stock/SKU-A/receive", receive)
	mustStatus(t, first, http.StatusOK)
	again := e.post("/stock/SKU-A/receive", receive)
	mustStatus(t, again, http.StatusOK)
	if !bytes.Equal(again.Body.Bytes(), first.Body.Bytes()) {
		t.Errorf("same command again = %s, want %s", again.Body, first.Body)
	}
	for name, r := range map[string]req{
		"reservation":  {method: "POST", path: "/reservations", body: `{"command_id":"c1","order_id":"o-1","lines":[{"sku":"SKU-A","quantity":1}]}`},
		"other sku":    {method: "POST", path: "/stock/SKU-B/adjust", body: `{"command_id":"c1","warehouse_id":"wh-1","delta":3,"reason":"found"}`},
		"other amount": {method: "POST", path: "/stock/SKU-A/receive", body: `{"command_id":"c1","warehouse_id":"wh-1","quantity":6}`},
	} {
		rec := e.do(r)
		mustStatus(t, rec, http.StatusUnprocessableEntity)
		p := problem(t, rec)
		firstCmd, _ := p.Extensions["first_command"].(map[string]any)
		if p.Type != httpapi.TypeCommandIDReused || p.Extensions["command_id"] != "c1" ||
			firstCmd["kind"] != "ReceiveStock" || firstCmd["target"] != "SKU-A" {
			t.Errorf("%s with a used command_id: %+v", name, p)
		}
	}
	if n := e.count("events"); n != 1 {
		t.Errorf("events = %d, want 1 (the first receive only)", n)
	}
	mustStatus(t, e.do(req{method: "GET", path: "/stock/SKU-B"}), http.StatusNotFound)
}
