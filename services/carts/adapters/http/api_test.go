package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/services/carts/adapters/catalog"
	api "github.com/keel-commerce/keel/services/carts/adapters/http"
	"github.com/keel-commerce/keel/services/carts/app"
	catalogapp "github.com/keel-commerce/keel/services/carts/catalog/app"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
	"github.com/keel-commerce/keel/services/kit/idempotency"
)

type env struct {
	srv *httptest.Server
	svc *app.Service
}

// newEnv runs the carts API on its own database, pricing from a real
// catalog on another: SKU-001..SKU-101 in EUR (n × 100 cents), USD-1 in USD.
func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	catPool := testenv.Pool(t)
	catStore, err := pg.New(ctx, catPool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(catStore.Close)
	cat, err := catalogapp.New(ctx, catStore, catalogapp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cat.Close)
	for i := 1; i <= 101; i++ {
		sku := fmt.Sprintf("SKU-%03d", i)
		if _, err := cat.List(ctx, catalogapp.List{CommandID: sku, SKU: sku, Name: "Product " + sku, UnitPrice: catalogapp.Money{AmountMinor: int64(i * 100), Currency: "EUR"}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cat.List(ctx, catalogapp.List{CommandID: "usd", SKU: "USD-1", Name: "Dollar thing", UnitPrice: catalogapp.Money{AmountMinor: 100, Currency: "USD"}}); err != nil {
		t.Fatal(err)
	}

	pool := testenv.Pool(t)
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	svc, err := app.New(ctx, st, catalog.New(catPool), app.Config{})
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

const js = "application/json"

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

func (e *env) cart(t *testing.T, b []byte) app.View {
	t.Helper()
	var v app.View
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("cart %s: %v", b, err)
	}
	return v
}

const checkoutBody = `{"customer":{"customer_id":"cus-1","email":"ada@example.com"},
 "shipping_address":{"name":"Ada","line1":"1 Main St","city":"Berlin","postal_code":"10115","country_code":"DE"},
 "payment_method":{"kind":"card","token":"tok_visa"}}`

func TestCartLifecycle(t *testing.T) {
	e := newEnv(t)
	res, b := e.do(t, "POST", "/carts", js, `{"cart_id":"k1","customer_id":"cus-1","currency":"EUR"}`)
	if res.StatusCode != 201 || res.Header.Get("Location") != "/carts/k1" {
		t.Fatalf("create: %d %v %s", res.StatusCode, res.Header, b)
	}
	testenv.ConsistencyToken(t, res.Header, "carts", map[string]int64{app.Stream("k1"): 1})
	res, b = e.do(t, "POST", "/carts/k1/lines", js, `{"sku":"SKU-002","quantity":3}`, "Idempotency-Key", "add-1")
	if v := e.cart(t, b); res.StatusCode != 200 || v.Subtotal.AmountMinor != 600 || v.Lines[0].UnitPrice.AmountMinor != 200 {
		t.Fatalf("add: %d %s", res.StatusCode, b)
	}
	// A retry with the same key adds nothing.
	before := e.events(t)
	res, b2 := e.do(t, "POST", "/carts/k1/lines", js, `{"sku":"SKU-002","quantity":3}`, "Idempotency-Key", "add-1")
	if res.StatusCode != 200 || string(b2) != string(b) || res.Header.Get(idempotency.HeaderReplayed) != "true" || e.events(t) != before {
		t.Fatalf("replay: %d %s", res.StatusCode, b2)
	}
	// The same key with another body is refused.
	if res, b = e.do(t, "POST", "/carts/k1/lines", js, `{"sku":"SKU-002","quantity":4}`, "Idempotency-Key", "add-1"); res.StatusCode != 422 {
		t.Fatalf("key reuse: %d %s", res.StatusCode, b)
	}
	e.do(t, "POST", "/carts/k1/lines", js, `{"sku":"SKU-010","quantity":1}`)
	if res, b = e.do(t, "PATCH", "/carts/k1/lines/SKU-010", js, `{"quantity":2}`); res.StatusCode != 200 || e.cart(t, b).Subtotal.AmountMinor != 2600 {
		t.Fatalf("patch: %d %s", res.StatusCode, b)
	}
	if res, b = e.do(t, "DELETE", "/carts/k1/lines/SKU-002", "", ""); res.StatusCode != 200 || e.cart(t, b).Subtotal.AmountMinor != 2000 {
		t.Fatalf("delete: %d %s", res.StatusCode, b)
	}
	res, b = e.do(t, "POST", "/carts/k1/checkout", js, checkoutBody)
	if v := e.cart(t, b); res.StatusCode != 200 || v.Status != "checking_out" || v.CheckoutID == "" {
		t.Fatalf("checkout: %d %s", res.StatusCode, b)
	}
	// Created, two lines added, one changed, one removed, checked out.
	testenv.ConsistencyToken(t, res.Header, "carts", map[string]int64{app.Stream("k1"): 6})
	if res, b = e.do(t, "GET", "/carts/k1", "", ""); res.StatusCode != 200 || e.cart(t, b).Status != "checking_out" {
		t.Fatalf("get: %d %s", res.StatusCode, b)
	}
	// Clear on a fresh cart, with a generated id.
	res, b = e.do(t, "POST", "/carts", js, `{"currency":"EUR"}`)
	id := e.cart(t, b).CartID
	if res.StatusCode != 201 || id == "" {
		t.Fatalf("create without id: %d %s", res.StatusCode, b)
	}
	e.do(t, "POST", "/carts/"+id+"/lines", js, `{"sku":"SKU-001","quantity":1}`)
	if res, b = e.do(t, "POST", "/carts/"+id+"/clear", "", ""); res.StatusCode != 200 || len(e.cart(t, b).Lines) != 0 {
		t.Fatalf("clear: %d %s", res.StatusCode, b)
	}
}

// TestBadInput: every bad request gets its exact status as a problem, and
// no event is stored.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, c := range []app.Create{{CommandID: "c1", CartID: "open", Currency: "EUR"}, {CommandID: "c2", CartID: "frozen", Currency: "EUR"}, {CommandID: "c3", CartID: "full", Currency: "EUR"}} {
		if _, err := e.svc.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.svc.AddLine(ctx, app.AddLine{CommandID: "f1", CartID: "frozen", SKU: "SKU-001", Quantity: 1}); err != nil {
		t.Fatal(err)
	}
	if res, b := e.do(t, "POST", "/carts/frozen/checkout", js, checkoutBody); res.StatusCode != 200 {
		t.Fatalf("freeze: %d %s", res.StatusCode, b)
	}
	for i := 1; i <= 100; i++ {
		if _, err := e.svc.AddLine(ctx, app.AddLine{CommandID: fmt.Sprint("full-", i), CartID: "full", SKU: fmt.Sprintf("SKU-%03d", i), Quantity: 1}); err != nil {
			t.Fatal(err)
		}
	}
	v := httpapi.TypeValidation
	for _, c := range []struct {
		name, method, path, ctype, body string
		status                          int
		typ, code                       string
	}{
		{"malformed json", "POST", "/carts/open/lines", js, `{"sku":"SKU-001",`, 400, httpapi.TypeMalformed, ""},
		{"empty body", "POST", "/carts/open/lines", js, ``, 400, httpapi.TypeMalformed, ""},
		{"unknown field", "POST", "/carts/open/lines", js, `{"sku":"SKU-001","quantity":1,"price":1}`, 400, httpapi.TypeMalformed, ""},
		{"wrong type", "POST", "/carts/open/lines", js, `{"sku":"SKU-001","quantity":"1"}`, 400, httpapi.TypeMalformed, ""},
		{"fractional quantity", "POST", "/carts/open/lines", js, `{"sku":"SKU-001","quantity":1.5}`, 400, httpapi.TypeMalformed, ""},
		{"two values", "POST", "/carts/open/lines", js, `{"sku":"SKU-001","quantity":1}{}`, 400, httpapi.TypeMalformed, ""},
		{"missing quantity", "POST", "/carts/open/lines", js, `{"sku":"SKU-001"}`, 422, v, ""},
		{"missing sku", "POST", "/carts/open/lines", js, `{"quantity":1}`, 422, v, ""},
		{"zero quantity", "POST", "/carts/open/lines", js, `{"sku":"SKU-001","quantity":0}`, 422, v, ""},
		{"negative quantity", "POST", "/carts/open/lines", js, `{"sku":"SKU-001","quantity":-2}`, 422, v, ""},
		{"huge quantity", "POST", "/carts/open/lines", js, `{"sku":"SKU-001","quantity":1000}`, 422, v, ""},
		{"zero quantity patch", "PATCH", "/carts/open/lines/SKU-001", js, `{"quantity":0}`, 422, v, ""},
		{"oversized body", "POST", "/carts/open/lines", js, `{"sku":"` + strings.Repeat("x", 70<<10) + `","quantity":1}`, 413, httpapi.TypeTooLarge, ""},
		{"not json", "POST", "/carts/open/lines", "text/plain", `{"sku":"SKU-001","quantity":1}`, 415, httpapi.TypeUnsupportedMediaType, ""},
		{"no content type", "POST", "/carts", "", `{"currency":"EUR"}`, 415, httpapi.TypeUnsupportedMediaType, ""},
		{"bad currency", "POST", "/carts", js, `{"currency":"eur"}`, 422, v, ""},
		{"null customer", "POST", "/carts", js, `{"currency":"EUR","customer_id":null}`, 400, httpapi.TypeMalformed, ""},
		{"cart exists", "POST", "/carts", js, `{"cart_id":"open","currency":"EUR"}`, 409, httpapi.TypeConflict, app.CodeCartExists},
		{"unknown sku", "POST", "/carts/open/lines", js, `{"sku":"SKU-999","quantity":1}`, 422, api.TypeUnknownSKU, "unknown_sku"},
		{"currency mismatch", "POST", "/carts/open/lines", js, `{"sku":"USD-1","quantity":1}`, 422, api.TypeCurrencyMismatch, app.CodeCurrencyMismatch},
		{"101st line", "POST", "/carts/full/lines", js, `{"sku":"SKU-101","quantity":1}`, 422, api.TypeTooManyLines, app.CodeTooManyLines},
		{"unknown cart", "POST", "/carts/nope/lines", js, `{"sku":"SKU-001","quantity":1}`, 404, httpapi.TypeNotFound, app.CodeUnknownCart},
		{"quantity in unknown cart", "PATCH", "/carts/nope/lines/SKU-001", js, `{"quantity":2}`, 404, httpapi.TypeNotFound, app.CodeUnknownCart},
		{"remove from unknown cart", "DELETE", "/carts/nope/lines/SKU-001", "", "", 404, httpapi.TypeNotFound, app.CodeUnknownCart},
		{"clear unknown cart", "POST", "/carts/nope/clear", "", "", 404, httpapi.TypeNotFound, app.CodeUnknownCart},
		{"get unknown cart", "GET", "/carts/nope", "", "", 404, httpapi.TypeNotFound, ""},
		{"line not in cart", "PATCH", "/carts/open/lines/SKU-002", js, `{"quantity":2}`, 404, httpapi.TypeNotFound, app.CodeNoSuchLine},
		{"add to frozen cart", "POST", "/carts/frozen/lines", js, `{"sku":"SKU-001","quantity":1}`, 409, api.TypeCartFrozen, app.CodeCartFrozen},
		{"clear frozen cart", "POST", "/carts/frozen/clear", "", "", 409, api.TypeCartFrozen, app.CodeCartFrozen},
		{"checkout twice", "POST", "/carts/frozen/checkout", js, checkoutBody, 409, api.TypeCartFrozen, app.CodeCartFrozen},
		{"checkout empty cart", "POST", "/carts/open/checkout", js, checkoutBody, 422, api.TypeCartEmpty, app.CodeEmpty},
		{"checkout stale version", "POST", "/carts/full/checkout", js, strings.Replace(checkoutBody, `{"customer"`, `{"expected_version":3,"customer"`, 1), 409, api.TypeVersionMismatch, app.CodeVersionMismatch},
		{"checkout without address", "POST", "/carts/full/checkout", js, `{"customer":{"customer_id":"c","email":"a@b.c"},"payment_method":{"kind":"card","token":"t"}}`, 422, v, ""},
		{"checkout lower-case country", "POST", "/carts/full/checkout", js, strings.Replace(checkoutBody, `"DE"`, `"de"`, 1), 422, v, ""},
		{"checkout bad payment kind", "POST", "/carts/full/checkout", js, strings.Replace(checkoutBody, `"card"`, `"cash"`, 1), 422, v, ""},
		{"bad idempotency key", "POST", "/carts/open/lines", js, `{"sku":"SKU-001","quantity":1}`, 400, httpapi.TypeIdempotencyKeyInvalid, ""},
		{"non-ASCII idempotency key", "POST", "/carts/open/clear", "", "", 400, httpapi.TypeIdempotencyKeyInvalid, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := e.events(t)
			var hdr []string
			switch c.name {
			case "bad idempotency key":
				hdr = []string{"Idempotency-Key", strings.Repeat("k", 300)}
			case "non-ASCII idempotency key":
				hdr = []string{"Idempotency-Key", "clé"}
			}
			res, b := e.do(t, c.method, c.path, c.ctype, c.body, hdr...)
			if res.StatusCode != c.status || res.Header.Get("Content-Type") != httpapi.ContentTypeProblem {
				t.Fatalf("%d %q %s; want %d problem", res.StatusCode, res.Header.Get("Content-Type"), b, c.status)
			}
			var p httpapi.Problem
			if err := json.Unmarshal(b, &p); err != nil || p.Type != c.typ || p.Status != c.status {
				t.Fatalf("problem %s: %v; want type %s", b, err, c.typ)
			}
			if got, _ := p.Extensions["code"].(string); got != c.code {
				t.Fatalf("code %q, want %q (%s)", got, c.code, b)
			}
			// The client's words: a cart that does not exist, never one "that is none".
			if c.code == app.CodeUnknownCart && (!strings.Contains(p.Detail, "does not exist") || strings.Contains(p.Detail, "none")) {
				t.Fatalf("detail %q, want one saying the cart does not exist", p.Detail)
			}
			if after := e.events(t); after != before {
				t.Fatalf("events %d → %d: a refused request stored something", before, after)
			}
		})
	}
}

type openAPI struct {
	OpenAPI    string                                `json:"openapi"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas map[string]struct {
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"schemas"`
	} `json:"components"`
}

// TestOpenAPIMatchesRoutes: the document describes exactly the routed
// paths and methods, its request schemas name exactly the fields the
// handlers decode, and /openapi.json serves it.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc openAPI
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.0") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	var documented, routed []string
	for path, ops := range doc.Paths {
		for m := range ops {
			documented = append(documented, strings.ToUpper(m)+" "+path)
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
	for name, typ := range map[string]any{"CreateRequest": api.CreateRequest{}, "AddLineRequest": api.AddLineRequest{},
		"QuantityRequest": api.QuantityRequest{}, "CommandRequest": api.CommandRequest{}, "CheckoutRequest": api.CheckoutRequest{},
		"Customer": api.Customer{}, "Address": api.Address{}, "PaymentMethod": api.PaymentMethod{}, "Cart": app.View{},
		"Line": app.LineView{}, "Money": app.Money{}} {
		var fields, props []string
		rt := reflect.TypeOf(typ)
		for i := range rt.NumField() {
			fields = append(fields, strings.Split(rt.Field(i).Tag.Get("json"), ",")[0])
		}
		for p := range doc.Components.Schemas[name].Properties {
			props = append(props, p)
		}
		slices.Sort(fields)
		slices.Sort(props)
		if !slices.Equal(fields, props) {
			t.Errorf("schema %s documents %v, the handler takes %v", name, props, fields)
		}
	}
	e := newEnv(t)
	for _, r := range api.Routes {
		path := strings.NewReplacer("{id}", "x", "{sku}", "y").Replace(r.Path)
		res, _ := e.do(t, r.Method, path, js, `{}`)
		if res.StatusCode == http.StatusMethodNotAllowed || (res.StatusCode == 404 && res.Header.Get("Content-Type") != httpapi.ContentTypeProblem) {
			t.Errorf("%s %s is not routed: %d", r.Method, r.Path, res.StatusCode)
		}
	}
	if res, b := e.do(t, "GET", "/openapi.json", "", ""); res.StatusCode != 200 || string(b) != string(api.OpenAPI) {
		t.Fatalf("/openapi.json: %d", res.StatusCode)
	}
}

// TestCommandIDNamesOneCommand: the command_id that created one cart,
// sent to add a line to another, is a 422 command-id-reused naming the
// first command; it neither answers the first cart nor drops the line
// silently. A create or checkout retried without its generated id answers
// the first cart or checkout.
func TestCommandIDNamesOneCommand(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"reuse-a", "reuse-b"} {
		if res, b := e.do(t, "POST", "/carts", js, `{"command_id":"create-`+id+`","cart_id":"`+id+`","currency":"EUR"}`); res.StatusCode != 201 {
			t.Fatalf("create %s: %d %s", id, res.StatusCode, b)
		}
	}
	before := e.events(t)
	res, b := e.do(t, "POST", "/carts/reuse-b/lines", js, `{"command_id":"create-reuse-a","sku":"SKU-001","quantity":1}`)
	var p httpapi.Problem
	_ = json.Unmarshal(b, &p)
	first, _ := p.Extensions["first_command"].(map[string]any)
	if res.StatusCode != 422 || p.Type != httpapi.TypeCommandIDReused || first["kind"] != "CreateCart" || first["target"] != "reuse-a" {
		t.Fatalf("add a line with the id that created another cart: %d %s; want 422 command-id-reused naming CreateCart on reuse-a", res.StatusCode, b)
	}
	if e.events(t) != before {
		t.Fatal("a reused command id wrote events")
	}
	// The line is added under a new id, and the first command still replays.
	if res, b = e.do(t, "POST", "/carts/reuse-b/lines", js, `{"command_id":"add-b","sku":"SKU-001","quantity":1}`); res.StatusCode != 200 || len(e.cart(t, b).Lines) != 1 {
		t.Fatalf("add under a new id: %d %s", res.StatusCode, b)
	}
	if res, b = e.do(t, "POST", "/carts", js, `{"command_id":"create-reuse-a","cart_id":"reuse-a","currency":"EUR"}`); res.StatusCode != 201 || e.cart(t, b).CartID != "reuse-a" {
		t.Fatalf("the first command again: %d %s", res.StatusCode, b)
	}
	// The checkout command alike; its generated checkout id is not part of
	// it, so a retry answers the same checkout.
	withID := func(id string) string { return `{"command_id":"` + id + `",` + checkoutBody[1:] }
	_, b = e.do(t, "POST", "/carts/reuse-b/checkout", js, withID("checkout-b"))
	_, b2 := e.do(t, "POST", "/carts/reuse-b/checkout", js, withID("checkout-b"))
	if co := e.cart(t, b).CheckoutID; co == "" || e.cart(t, b2).CheckoutID != co {
		t.Fatalf("checkout retried: %s then %s; want one checkout", b, b2)
	}
	if res, b = e.do(t, "POST", "/carts/reuse-a/checkout", js, withID("checkout-b")); res.StatusCode != 422 || !strings.Contains(string(b), "RequestCheckout on reuse-b") {
		t.Fatalf("checkout of reuse-a under reuse-b's command_id: %d %s; want 422 command-id-reused", res.StatusCode, b)
	}
	// A generated cart id is not part of the command: a retry answers the same cart.
	_, b = e.do(t, "POST", "/carts", js, `{"command_id":"create-new","currency":"EUR"}`)
	_, b2 = e.do(t, "POST", "/carts", js, `{"command_id":"create-new","currency":"EUR"}`)
	if id := e.cart(t, b).CartID; id == "" || e.cart(t, b2).CartID != id {
		t.Fatalf("create retried without cart_id: %s then %s; want one cart", b, b2)
	}
}
