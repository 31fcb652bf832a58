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
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
	"github.com/keel-commerce/keel/services/kit/idempotency"
	api "github.com/keel-commerce/keel/services/payments/adapters/http"
	"github.com/keel-commerce/keel/services/payments/app"
	"github.com/keel-commerce/keel/services/payments/domain"
	"github.com/keel-commerce/keel/services/payments/gateway/sim"
)

type env struct {
	srv *httptest.Server
	svc *app.Service
	gw  *sim.Sim
}

func newEnv(t *testing.T, cfg sim.Config) *env {
	t.Helper()
	ctx := context.Background()
	pool := testenv.Pool(t)
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	gw, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := app.New(ctx, st, app.Config{Gateway: gw})
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
	return &env{srv: srv, svc: svc, gw: gw}
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

func auth(payment string, amount string) string {
	return `{"payment_id":"` + payment + `","order_id":"order-1","amount":{"amount_minor":` + amount + `,"currency":"EUR"},"method":{"kind":"card","token":"tok"}}`
}

func status(t *testing.T, b []byte) string {
	t.Helper()
	var v app.View
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return v.Status
}

func TestFlow(t *testing.T) {
	e := newEnv(t, sim.Config{Seed: 1})
	res, b := e.do(t, "POST", "/payments", js, auth("p1", "1000"), "Idempotency-Key", "k1")
	if res.StatusCode != 201 || status(t, b) != "authorized" {
		t.Fatalf("authorize: %d %s", res.StatusCode, b)
	}
	testenv.ConsistencyToken(t, res.Header, "payments", map[string]int64{app.Stream("p1"): 1})
	if res, _ := e.do(t, "POST", "/payments", js, auth("p1", "1000"), "Idempotency-Key", "k1"); res.StatusCode != 201 || res.Header.Get(idempotency.HeaderReplayed) != "true" {
		t.Fatalf("replay: %d", res.StatusCode)
	}
	if res, b := e.do(t, "POST", "/payments/p1/capture", "", ""); res.StatusCode != 200 || status(t, b) != "captured" {
		t.Fatalf("capture: %d %s", res.StatusCode, b)
	} else {
		testenv.ConsistencyToken(t, res.Header, "payments", map[string]int64{app.Stream("p1"): 2})
	}
	if res, b := e.do(t, "POST", "/payments/p1/refund", js, `{"refund_id":"r1","amount":{"amount_minor":400,"currency":"EUR"}}`); res.StatusCode != 200 {
		t.Fatalf("refund: %d %s", res.StatusCode, b)
	}
	res, b = e.do(t, "GET", "/payments/p1", "", "")
	var v app.View
	if err := json.Unmarshal(b, &v); err != nil || res.StatusCode != 200 || v.CapturedMinor != 1000 || v.RefundedMinor != 400 || v.Version != 3 {
		t.Fatalf("get: %d %s", res.StatusCode, b)
	}
	if e.gw.Charges(domain.AuthorizeKey("p1")) != 1 {
		t.Fatal("charged more than once")
	}
}

func TestDeclineAndTimeout(t *testing.T) {
	e := newEnv(t, sim.Config{Seed: 1, DeclineRate: 1})
	res, b := e.do(t, "POST", "/payments", js, auth("p1", "1000"))
	var p httpapi.Problem
	if err := json.Unmarshal(b, &p); err != nil || res.StatusCode != 402 || p.Type != api.TypeDeclined || res.Header.Get("Content-Type") != httpapi.ContentTypeProblem {
		t.Fatalf("declined: %d %s", res.StatusCode, b)
	}
	if e.events(t) != 1 {
		t.Fatal("the decline is not recorded")
	}

	e = newEnv(t, sim.Config{Seed: 1, AmbiguousRate: 1})
	if res, b := e.do(t, "POST", "/payments", js, auth("p1", "1000"), "Idempotency-Key", "a1"); res.StatusCode != 202 || status(t, b) != "unknown" {
		t.Fatalf("ambiguous: %d %s", res.StatusCode, b)
	}
	if res, b := e.do(t, "POST", "/payments", js, auth("p1", "1000"), "Idempotency-Key", "a2"); res.StatusCode != 201 || status(t, b) != "authorized" {
		t.Fatalf("retry: %d %s", res.StatusCode, b)
	}
	if n := e.gw.Charges(domain.AuthorizeKey("p1")); n != 1 {
		t.Fatalf("charges %d", n)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, sim.Config{Seed: 2})
	for _, s := range []struct{ path, body string }{
		{"/payments", auth("p1", "1000")}, {"/payments/p1/capture", `{"amount":{"amount_minor":600,"currency":"EUR"}}`},
		{"/payments", auth("p2", "500")},
	} {
		if res, b := e.do(t, "POST", s.path, js, s.body); res.StatusCode/100 != 2 {
			t.Fatalf("seed %s: %d %s", s.path, res.StatusCode, b)
		}
	}
	for _, c := range []struct {
		name, method, path, ctype, body string
		status                          int
		typ                             string
		fields                          []string
	}{
		{"malformed", "POST", "/payments", js, `{"payment_id":`, 400, httpapi.TypeMalformed, nil},
		{"unknown field", "POST", "/payments", js, strings.Replace(auth("p3", "1"), `{`, `{"tip":1,`, 1), 400, httpapi.TypeMalformed, nil},
		{"wrong type", "POST", "/payments", js, auth("p3", `"10"`), 400, httpapi.TypeMalformed, nil},
		{"missing fields", "POST", "/payments", js, `{"payment_id":"p3"}`, 422, httpapi.TypeValidation, []string{"order_id", "amount", "method"}},
		{"zero amount", "POST", "/payments", js, auth("p3", "0"), 422, httpapi.TypeValidation, []string{"amount.amount_minor"}},
		{"negative amount", "POST", "/payments", js, auth("p3", "-5"), 422, httpapi.TypeValidation, []string{"amount.amount_minor"}},
		{"currency shape", "POST", "/payments", js, strings.Replace(auth("p3", "1"), `"EUR"`, `"eu"`, 1), 422, httpapi.TypeValidation, []string{"amount.currency"}},
		{"bad method", "POST", "/payments", js, strings.Replace(auth("p3", "1"), `"card"`, `"cash"`, 1), 422, httpapi.TypeValidation, []string{"method.kind"}},
		{"text body", "POST", "/payments", "text/plain", `{}`, 415, httpapi.TypeUnsupportedMediaType, nil},
		{"too large", "POST", "/payments", js, `{"payment_id":"` + strings.Repeat("x", 70<<10) + `"}`, 413, httpapi.TypeTooLarge, nil},
		{"authorize again", "POST", "/payments", js, auth("p1", "1000"), 409, httpapi.ProblemBase + "illegal-transition", nil},
		{"void after capture", "POST", "/payments/p1/void", "", "", 409, httpapi.ProblemBase + "illegal-transition", nil},
		{"capture twice", "POST", "/payments/p1/capture", "", "", 409, httpapi.ProblemBase + "illegal-transition", nil},
		{"capture above authorized", "POST", "/payments/p2/capture", js, `{"amount":{"amount_minor":501,"currency":"EUR"}}`, 422, httpapi.ProblemBase + "exceeds-authorized", nil},
		{"capture currency mismatch", "POST", "/payments/p2/capture", js, `{"amount":{"amount_minor":1,"currency":"USD"}}`, 422, httpapi.ProblemBase + "currency-mismatch", nil},
		{"refund above captured", "POST", "/payments/p1/refund", js, `{"amount":{"amount_minor":601,"currency":"EUR"}}`, 422, httpapi.ProblemBase + "exceeds-captured", nil},
		{"refund zero", "POST", "/payments/p1/refund", js, `{"amount":{"amount_minor":0,"currency":"EUR"}}`, 422, httpapi.TypeValidation, []string{"amount.amount_minor"}},
		{"refund uncaptured", "POST", "/payments/p2/refund", js, `{"amount":{"amount_minor":1,"currency":"EUR"}}`, 409, httpapi.ProblemBase + "illegal-transition", nil},
		{"unknown payment", "POST", "/payments/p9/capture", "", "", 404, httpapi.TypeNotFound, nil},
		{"get unknown", "GET", "/payments/p9", "", "", 404, httpapi.TypeNotFound, nil},
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
	if n := e.gw.Charges(domain.CaptureKey("p2")); n != 0 {
		t.Fatalf("a refused capture reached the provider %d times", n)
	}
}

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
	e := newEnv(t, sim.Config{})
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

// TestCommandIDNamesOneCommand: the command_id of p1's authorization sent
// to authorize p2 is a 422 command-id-reused naming AuthorizePayment on
// p1, and p2 is never charged (was: p1's answer replayed for p2).
func TestCommandIDNamesOneCommand(t *testing.T) {
	e := newEnv(t, sim.Config{Seed: 1})
	withID := func(id, body string) string { return `{"command_id":"` + id + `",` + body[1:] }
	if res, b := e.do(t, "POST", "/payments", js, withID("a1", auth("p1", "1000"))); res.StatusCode != 201 {
		t.Fatalf("authorize p1: %d %s", res.StatusCode, b)
	}
	if res, b := e.do(t, "POST", "/payments", js, withID("a1", auth("p1", "1000"))); res.StatusCode != 201 || status(t, b) != "authorized" {
		t.Fatalf("the same authorization again: %d %s", res.StatusCode, b)
	}
	res, b := e.do(t, "POST", "/payments", js, withID("a1", auth("p2", "1000")))
	if res.StatusCode != 422 || !strings.Contains(string(b), `"type":"`+httpapi.TypeCommandIDReused+`"`) || !strings.Contains(string(b), "AuthorizePayment on p1") {
		t.Fatalf("authorize p2 under p1's command_id: %d %s; want 422 command-id-reused naming the first", res.StatusCode, b)
	}
	if e.gw.Charges(domain.AuthorizeKey("p2")) != 0 || e.gw.Charges(domain.AuthorizeKey("p1")) != 1 {
		t.Fatal("a reused command id reached the provider")
	}
	if n := e.events(t); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
}
