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

	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	api "github.com/keel-commerce/keel/services/carts/catalog/adapters/http"
	"github.com/keel-commerce/keel/services/carts/catalog/app"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
	"github.com/keel-commerce/keel/services/kit/idempotency"
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

func TestListAndRead(t *testing.T) {
	e := newEnv(t)
	res, b := e.do(t, "POST", "/products", js, `{"sku":"SKU-1","name":"Kettle","unit_price":{"amount_minor":2999,"currency":"EUR"}}`, "Idempotency-Key", "k1")
	if res.StatusCode != 201 {
		t.Fatalf("list: %d %s", res.StatusCode, b)
	}
	testenv.ConsistencyToken(t, res.Header, "catalog", map[string]int64{app.Stream("SKU-1"): 1})
	var p app.Product
	if err := json.Unmarshal(b, &p); err != nil || p.UnitPrice.AmountMinor != 2999 || !p.Listed {
		t.Fatalf("list body %s: %v", b, err)
	}
	res, b = e.do(t, "POST", "/products", js, `{"sku":"SKU-1","name":"Kettle","unit_price":{"amount_minor":2999,"currency":"EUR"}}`, "Idempotency-Key", "k1")
	if res.StatusCode != 201 || res.Header.Get(idempotency.HeaderReplayed) != "true" {
		t.Fatalf("replay: %d %s", res.StatusCode, b)
	}
	if res, b = e.do(t, "POST", "/products", js, `{"sku":"SKU-1","name":"Kettle","unit_price":{"amount_minor":1,"currency":"EUR"}}`); res.StatusCode != 409 {
		t.Fatalf("relist: %d %s", res.StatusCode, b)
	}
	if res, b = e.do(t, "POST", "/products/SKU-1/price", js, `{"unit_price":{"amount_minor":2499,"currency":"EUR"}}`); res.StatusCode != 200 || !strings.Contains(string(b), `"amount_minor":2499`) {
		t.Fatalf("price: %d %s", res.StatusCode, b)
	}
	if res, b = e.do(t, "GET", "/products/SKU-1", "", ""); res.StatusCode != 200 || !strings.Contains(string(b), `"amount_minor":2499`) {
		t.Fatalf("get: %d %s", res.StatusCode, b)
	}
	if res, b = e.do(t, "GET", "/products?limit=10", "", ""); res.StatusCode != 200 || !strings.Contains(string(b), `"sku":"SKU-1"`) {
		t.Fatalf("list page: %d %s", res.StatusCode, b)
	}
	if res, b = e.do(t, "POST", "/products/SKU-1/delist", "", ""); res.StatusCode != 200 || !strings.Contains(string(b), `"listed":false`) {
		t.Fatalf("delist: %d %s", res.StatusCode, b)
	}
	if res, b = e.do(t, "POST", "/products/SKU-1/delist", "", ""); res.StatusCode != 409 {
		t.Fatalf("delist twice: %d %s", res.StatusCode, b)
	}
}

// TestBadInput: each bad request gets its exact status as a problem, and
// no event is stored.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	if res, b := e.do(t, "POST", "/products", js, `{"sku":"S1","name":"n","unit_price":{"amount_minor":100,"currency":"EUR"}}`); res.StatusCode != 201 {
		t.Fatalf("seed: %d %s", res.StatusCode, b)
	}
	for _, c := range []struct {
		name, method, path, ctype, body string
		status                          int
		typ                             string
	}{
		{"malformed", "POST", "/products", js, `{"sku":`, 400, httpapi.TypeMalformed},
		{"unknown field", "POST", "/products", js, `{"sku":"S2","name":"n","unit_price":{"amount_minor":1,"currency":"EUR"},"colour":"red"}`, 400, httpapi.TypeMalformed},
		{"wrong type", "POST", "/products", js, `{"sku":"S2","name":"n","unit_price":{"amount_minor":"1","currency":"EUR"}}`, 400, httpapi.TypeMalformed},
		{"missing price", "POST", "/products", js, `{"sku":"S2","name":"n"}`, 422, httpapi.TypeValidation},
		{"negative price", "POST", "/products", js, `{"sku":"S2","name":"n","unit_price":{"amount_minor":-1,"currency":"EUR"}}`, 422, httpapi.TypeValidation},
		{"bad currency", "POST", "/products", js, `{"sku":"S2","name":"n","unit_price":{"amount_minor":1,"currency":"euro"}}`, 422, httpapi.TypeValidation},
		{"bad sku", "POST", "/products", js, `{"sku":"a b","name":"n","unit_price":{"amount_minor":1,"currency":"EUR"}}`, 422, httpapi.TypeValidation},
		{"text body", "POST", "/products", "text/plain", `{}`, 415, httpapi.TypeUnsupportedMediaType},
		{"too large", "POST", "/products", js, `{"sku":"S2","name":"` + strings.Repeat("x", 70<<10) + `"}`, 413, httpapi.TypeTooLarge},
		{"currency change", "POST", "/products/S1/price", js, `{"unit_price":{"amount_minor":1,"currency":"USD"}}`, 422, httpapi.ProblemBase + "currency-mismatch"},
		{"price of unlisted", "POST", "/products/S9/price", js, `{"unit_price":{"amount_minor":1,"currency":"EUR"}}`, 409, httpapi.ProblemBase + "not-listed"},
		{"unknown product", "GET", "/products/S9", "", "", 404, httpapi.TypeNotFound},
		{"bad limit", "GET", "/products?limit=0", "", "", 422, httpapi.TypeValidation},
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
	// Every route in Routes is really mounted (a documented path that 404s
	// or 405s on its method would be a lie).
	e := newEnv(t)
	for _, r := range api.Routes {
		res, _ := e.do(t, r.Method, strings.ReplaceAll(r.Path, "{sku}", "X"), js, `{}`)
		if res.StatusCode == http.StatusMethodNotAllowed || (res.StatusCode == 404 && res.Header.Get("Content-Type") != httpapi.ContentTypeProblem) {
			t.Errorf("%s %s is not routed: %d", r.Method, r.Path, res.StatusCode)
		}
	}
	res, b := e.do(t, "GET", "/openapi.json", "", "")
	if res.StatusCode != 200 || string(b) != string(api.OpenAPI) {
		t.Fatalf("/openapi.json: %d", res.StatusCode)
	}
}

// TestCommandIDNamesOneCommand: a price change of SKU-00013 under the
// command_id already used for SKU-00011's is a 422 command-id-reused, not
// a 200 with the old price; the same change again replays.
func TestCommandIDNamesOneCommand(t *testing.T) {
	e := newEnv(t)
	for _, sku := range []string{"SKU-00011", "SKU-00013"} {
		if res, b := e.do(t, "POST", "/products", js, `{"sku":"`+sku+`","name":"Kettle","unit_price":{"amount_minor":1000,"currency":"EUR"}}`); res.StatusCode != 201 {
			t.Fatalf("list %s: %d %s", sku, res.StatusCode, b)
		}
	}
	change := `{"command_id":"price-1","unit_price":{"amount_minor":1100,"currency":"EUR"}}`
	res, first := e.do(t, "POST", "/products/SKU-00011/price", js, change)
	if res.StatusCode != 200 {
		t.Fatalf("change SKU-00011: %d %s", res.StatusCode, first)
	}
	if res, b := e.do(t, "POST", "/products/SKU-00011/price", js, change); res.StatusCode != 200 || string(b) != string(first) {
		t.Fatalf("the same change again: %d %s; want %s", res.StatusCode, b, first)
	}
	before := e.events(t)
	res, b := e.do(t, "POST", "/products/SKU-00013/price", js, `{"command_id":"price-1","unit_price":{"amount_minor":1300,"currency":"EUR"}}`)
	if res.StatusCode != 422 || !strings.Contains(string(b), `"type":"`+httpapi.TypeCommandIDReused+`"`) || !strings.Contains(string(b), "ChangePrice on SKU-00011") {
		t.Fatalf("change SKU-00013 under SKU-00011's command_id: %d %s; want 422 command-id-reused naming the first", res.StatusCode, b)
	}
	if e.events(t) != before {
		t.Fatal("a reused command id wrote events")
	}
	if res, b = e.do(t, "GET", "/products/SKU-00013", "", ""); res.StatusCode != 200 || !strings.Contains(string(b), `"amount_minor":1000`) {
		t.Fatalf("SKU-00013 after: %d %s", res.StatusCode, b)
	}
}
