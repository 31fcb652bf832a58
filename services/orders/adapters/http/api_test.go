package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/keel-commerce/keel/events/codec"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
	"github.com/keel-commerce/keel/services/kit/idempotency"
	api "github.com/keel-commerce/keel/services/orders/adapters/http"
	"github.com/keel-commerce/keel/services/orders/app"
)

type env struct {
	srv *httptest.Server
	svc *app.Service
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	pool := testenv.Pool(t)
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	svc, err := app.New(ctx, st, app.Config{})
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
	api.New(svc, keys, nil).Register(mux)
	httpapi.Ops{OpenAPI: api.OpenAPI}.Register(mux)
	srv := httptest.NewServer(openapitest.New(t, api.OpenAPI).Handler(httpapi.Wrap(mux, nil, nil)))
	t.Cleanup(srv.Close)
	return &env{srv: srv, svc: svc}
}

func (e *env) do(t *testing.T, method, path, ctype, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

func (e *env) events(t *testing.T) int {
	t.Helper()
	var n int
	if err := e.svc.Pool().QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

const js = "application/json"

func place(checkout, lines string) string {
	return `{"checkout_id":"` + checkout + `","customer":{"customer_id":"cus-1"},"shipping_address":{"line1":"1 Road","city":"Berlin","country_code":"DE"},"lines":` + lines + `}`
}

const goodLines = `[{"sku":"a","quantity":2,"unit_price":{"amount_minor":250,"currency":"EUR"}}]`

func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	res, b := e.do(t, "POST", "/orders", js, place("co-1", goodLines), "Idempotency-Key", "k1")
	if res.StatusCode != 201 || res.Header.Get("Location") != "/orders/order-co-1" {
		t.Fatalf("place: %d %v %s", res.StatusCode, res.Header, b)
	}
	testenv.ConsistencyToken(t, res.Header, "orders", map[string]int64{"order-co-1": 1})
	var o app.View
	if err := json.Unmarshal(b, &o); err != nil || o.Status != "pending" || o.Totals.Total.AmountMinor != 500 {
		t.Fatalf("place: %s %v", b, err)
	}
	// The same key and body: replayed. The same checkout under another key: 200, no new order.
	if res, _ := e.do(t, "POST", "/orders", js, place("co-1", goodLines), "Idempotency-Key", "k1"); res.StatusCode != 201 || res.Header.Get(idempotency.HeaderReplayed) != "true" {
		t.Fatalf("replay: %d", res.StatusCode)
	}
	if res, _ := e.do(t, "POST", "/orders", js, place("co-1", goodLines), "Idempotency-Key", "k2"); res.StatusCode != 200 {
		t.Fatalf("second place: %d", res.StatusCode)
	} else {
		// Nothing new, but the order's stream as it is: still a token to wait on.
		testenv.ConsistencyToken(t, res.Header, "orders", map[string]int64{"order-co-1": 1})
	}
	if n := e.events(t); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
	for i, step := range []struct{ path, body string }{
		{"/orders/order-co-1/confirm", ``},
		{"/orders/order-co-1/pay", `{"payment_id":"pay-1","amount":{"amount_minor":500,"currency":"EUR"}}`},
		{"/orders/order-co-1/ship", `{"shipment_id":"sh-1","carrier":"DHL","tracking_number":"T1"}`},
	} {
		ctype := js
		if step.body == "" {
			ctype = ""
		}
		res, b := e.do(t, "POST", step.path, ctype, step.body)
		if res.StatusCode != 200 {
			t.Fatalf("%s: %d %s", step.path, res.StatusCode, b)
		}
		testenv.ConsistencyToken(t, res.Header, "orders", map[string]int64{"order-co-1": int64(i) + 2})
	}
	res, b = e.do(t, "GET", "/orders/order-co-1", "", "")
	if err := json.Unmarshal(b, &o); err != nil || res.StatusCode != 200 || o.Status != "shipped" || o.TrackingNumber != "T1" || o.PaymentID != "pay-1" {
		t.Fatalf("get: %d %s", res.StatusCode, b)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	if res, b := e.do(t, "POST", "/orders", js, place("co-1", goodLines)); res.StatusCode != 201 {
		t.Fatalf("seed: %d %s", res.StatusCode, b)
	}
	if res, b := e.do(t, "POST", "/orders", js, place("co-2", goodLines)); res.StatusCode != 201 {
		t.Fatalf("seed: %d %s", res.StatusCode, b)
	}
	if res, b := e.do(t, "POST", "/orders/order-co-2/confirm", "", ""); res.StatusCode != 200 {
		t.Fatalf("seed: %d %s", res.StatusCode, b)
	}
	for _, c := range []struct {
		name, method, path, ctype, body string
		status                          int
		typ                             string
		fields                          []string
	}{
		{"malformed", "POST", "/orders", js, `{"checkout_id":`, 400, httpapi.TypeMalformed, nil},
		{"unknown field", "POST", "/orders", js, strings.Replace(place("co-3", goodLines), `{`, `{"colour":"red",`, 1), 400, httpapi.TypeMalformed, nil},
		{"wrong type", "POST", "/orders", js, place("co-3", `[{"sku":"a","quantity":"2","unit_price":{"amount_minor":250,"currency":"EUR"}}]`), 400, httpapi.TypeMalformed, nil},
		{"missing fields", "POST", "/orders", js, `{"checkout_id":"co-3"}`, 422, httpapi.TypeValidation, []string{"customer", "shipping_address", "lines"}},
		{"zero and negative", "POST", "/orders", js, place("co-3", `[{"sku":"a","quantity":0,"unit_price":{"amount_minor":-1,"currency":"EUR"}}]`), 422, httpapi.TypeValidation,
			[]string{"lines.0.quantity", "lines.0.unit_price.amount_minor"}},
		{"currency shape", "POST", "/orders", js, place("co-3", `[{"sku":"a","quantity":1,"unit_price":{"amount_minor":1,"currency":"eur"}}]`), 422, httpapi.TypeValidation, []string{"lines.0.unit_price.currency"}},
		{"currency mismatch", "POST", "/orders", js, place("co-3", `[{"sku":"a","quantity":1,"unit_price":{"amount_minor":1,"currency":"EUR"}},{"sku":"b","quantity":1,"unit_price":{"amount_minor":1,"currency":"USD"}}]`), 422, httpapi.TypeValidation, []string{"lines.1.unit_price.currency"}},
		{"totals mismatch", "POST", "/orders", js, strings.TrimSuffix(place("co-3", goodLines), "}") + `,"totals":{"total":{"amount_minor":1,"currency":"EUR"}}}`, 422, httpapi.ProblemBase + "totals-mismatch", nil},
		{"text body", "POST", "/orders", "text/plain", `{}`, 415, httpapi.TypeUnsupportedMediaType, nil},
		{"too large", "POST", "/orders", js, `{"checkout_id":"` + strings.Repeat("x", 70<<10) + `"}`, 413, httpapi.TypeTooLarge, nil},
		{"unknown order", "POST", "/orders/order-nope/confirm", "", "", 404, httpapi.TypeNotFound, nil},
		{"get unknown", "GET", "/orders/order-nope", "", "", 404, httpapi.TypeNotFound, nil},
		{"illegal transition", "POST", "/orders/order-co-1/ship", js, `{"shipment_id":"s","carrier":"DHL"}`, 409, httpapi.ProblemBase + "illegal-transition", nil},
		{"confirm twice", "POST", "/orders/order-co-2/confirm", "", "", 409, httpapi.ProblemBase + "illegal-transition", nil},
		{"pay wrong amount", "POST", "/orders/order-co-2/pay", js, `{"payment_id":"p","amount":{"amount_minor":499,"currency":"EUR"}}`, 422, httpapi.ProblemBase + "amount-mismatch", nil},
		{"pay wrong currency", "POST", "/orders/order-co-2/pay", js, `{"payment_id":"p","amount":{"amount_minor":500,"currency":"USD"}}`, 422, httpapi.ProblemBase + "currency-mismatch", nil},
		{"pay zero", "POST", "/orders/order-co-2/pay", js, `{"payment_id":"p","amount":{"amount_minor":0,"currency":"EUR"}}`, 422, httpapi.TypeValidation, []string{"amount.amount_minor"}},
		{"cancel bad reason", "POST", "/orders/order-co-2/cancel", js, `{"reason":"bored"}`, 422, httpapi.TypeValidation, []string{"reason"}},
		{"ship missing", "POST", "/orders/order-co-2/ship", js, `{}`, 422, httpapi.TypeValidation, []string{"shipment_id", "carrier"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := e.events(t)
			res, b := e.do(t, c.method, c.path, c.ctype, c.body)
			if res.StatusCode != c.status || res.Header.Get("Content-Type") != httpapi.ContentTypeProblem {
				t.Fatalf("%d %q %s; want %d problem", res.StatusCode, res.Header.Get("Content-Type"), b, c.status)
			}
			var p httpapi.Problem
			if err := json.Unmarshal(b, &p); err != nil || p.Type != c.typ {
				t.Fatalf("problem %s: %v; want type %s", b, err, c.typ)
			}
			var got []string
			for _, f := range p.Errors {
				got = append(got, f.Field)
			}
			for _, f := range c.fields {
				if !slices.Contains(got, f) {
					t.Errorf("errors %v lack %s", got, f)
				}
			}
			if after := e.events(t); after != before {
				t.Fatalf("events %d → %d: a refused request stored something", before, after)
			}
		})
	}
}

// TestOpenAPIMatchesRoutes: the document describes exactly the routed
// paths and methods, and is what /openapi.json serves.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.0") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	var documented, routed []string
	for path, ops := range doc.Paths {
		for m := range ops {
			if m != "parameters" {
				documented = append(documented, strings.ToUpper(m)+" "+path)
			}
		}
	}
	for _, r := range api.Routes {
		routed = append(routed, r.Method+" "+r.Path)
	}
	routed = append(routed, "GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json")
	slices.Sort(documented)
	slices.Sort(routed)
	if !slices.Equal(documented, routed) {
		t.Fatalf("documented %v\nrouted     %v", documented, routed)
	}
	e := newEnv(t)
	for _, r := range api.Routes {
		res, _ := e.do(t, r.Method, strings.ReplaceAll(r.Path, "{id}", "X"), js, `{}`)
		if res.StatusCode == http.StatusMethodNotAllowed || (res.StatusCode == 404 && res.Header.Get("Content-Type") != httpapi.ContentTypeProblem) {
			t.Errorf("%s %s is not routed: %d", r.Method, r.Path, res.StatusCode)
		}
	}
	res, b := e.do(t, "GET", "/openapi.json", "", "")
	if res.StatusCode != 200 || string(b) != string(api.OpenAPI) {
		t.Fatalf("/openapi.json: %d", res.StatusCode)
	}
}

// TestCommandIDNamesOneCommand: a body command_id that placed one order,
// sent to confirm another, is a 422 command-id-reused naming PlaceOrder on
// the first order (was: 200 with the first order's receipt, and the second
// order left pending).
func TestCommandIDNamesOneCommand(t *testing.T) {
	e := newEnv(t)
	withID := func(id, body string) string { return `{"command_id":"` + id + `",` + body[1:] }
	for _, co := range []string{"co-1", "co-2"} {
		if res, b := e.do(t, "POST", "/orders", js, withID("place-"+co, place(co, goodLines))); res.StatusCode != 201 {
			t.Fatalf("place %s: %d %s", co, res.StatusCode, b)
		}
	}
	if res, b := e.do(t, "POST", "/orders", js, withID("place-co-1", place("co-1", goodLines))); res.StatusCode != 201 {
		t.Fatalf("the same place again: %d %s; want its first answer", res.StatusCode, b)
	}
	res, b := e.do(t, "POST", "/orders/order-co-2/confirm", js, `{"command_id":"place-co-1"}`)
	if res.StatusCode != 422 || !strings.Contains(string(b), `"type":"`+httpapi.TypeCommandIDReused+`"`) || !strings.Contains(string(b), "PlaceOrder on order-co-1") {
		t.Fatalf("confirm under another order's command_id: %d %s; want 422 command-id-reused naming the first", res.StatusCode, b)
	}
	if n := e.events(t); n != 2 {
		t.Fatalf("%d events, want 2 (the two placements)", n)
	}
}

// Every cancel reason the API takes comes back in the same words on the
// order (not the event's CANCEL_REASON_… enum name), and the document
// lists exactly those words for the input and the output.
func TestCancelReasonVocabulary(t *testing.T) {
	e := newEnv(t)
	reasons := codec.EnumNames(ordersv1.CancelReason(0).Descriptor())
	for _, reason := range reasons {
		co := "co-" + reason
		if res, b := e.do(t, "POST", "/orders", js, place(co, goodLines)); res.StatusCode != 201 {
			t.Fatalf("place %s: %d %s", co, res.StatusCode, b)
		}
		if res, b := e.do(t, "POST", "/orders/order-"+co+"/cancel", js, `{"reason":"`+reason+`"}`); res.StatusCode != 200 {
			t.Fatalf("cancel %s: %d %s", reason, res.StatusCode, b)
		}
		res, b := e.do(t, "GET", "/orders/order-"+co, "", "")
		var o app.View
		if err := json.Unmarshal(b, &o); err != nil || res.StatusCode != 200 || o.CancelReason != reason {
			t.Errorf("cancelled with %q: %d, cancel_reason %q (%s)", reason, res.StatusCode, o.CancelReason, b)
		}
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Enum []string `json:"enum"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	for name, s := range doc.Components.Schemas {
		for _, field := range []string{"reason", "cancel_reason"} {
			if p, ok := s.Properties[field]; ok && !slices.Equal(p.Enum, reasons) {
				t.Errorf("openapi %s.%s: enum %v, want %v", name, field, p.Enum, reasons)
			}
		}
	}
}
