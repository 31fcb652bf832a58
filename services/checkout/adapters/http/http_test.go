package http_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	checkouthttp "github.com/keel-commerce/keel/services/checkout/adapters/http"
	"github.com/keel-commerce/keel/services/checkout/domain"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
)

// checked serves mux with every exchange held to the OpenAPI document.
func checked(t *testing.T, mux *http.ServeMux) http.Handler {
	return openapitest.New(t, checkouthttp.OpenAPI).Handler(httpapi.Wrap(mux, nil, nil))
}

// The OpenAPI document names exactly the routes served, and the view's
// JSON fields are exactly the document's Checkout properties.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI    string                                `json:"openapi"`
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(checkouthttp.OpenAPI, &doc); err != nil {
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
	for _, r := range checkouthttp.Routes {
		routed = append(routed, r.Method+" "+r.Path)
	}
	routed = append(routed, "GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json")
	slices.Sort(documented)
	slices.Sort(routed)
	if !slices.Equal(documented, routed) {
		t.Fatalf("documented %v\nrouted     %v", documented, routed)
	}
	mux := http.NewServeMux()
	checkouthttp.New(reader{}, nil).Register(mux)
	httpapi.Ops{OpenAPI: checkouthttp.OpenAPI}.Register(mux)
	h := checked(t, mux)
	for _, r := range checkouthttp.Routes {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(r.Method, strings.ReplaceAll(r.Path, "{id}", "X"), nil))
		if rec.Code == http.StatusMethodNotAllowed || (rec.Code == 404 && rec.Header().Get("Content-Type") != "application/problem+json") {
			t.Errorf("%s %s is not routed: %d", r.Method, r.Path, rec.Code)
		}
	}
	// Every field the view can carry is documented, and nothing more.
	full := domain.View{EndedAt: &time.Time{}, CompensatingAt: &time.Time{}, FailureReason: "x", FailureDetail: "x",
		PaymentReconciliation: &domain.ReconciliationView{}}
	b, _ := json.Marshal(full)
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(b, &fields)
	var got, want []string
	for k := range fields {
		got = append(got, k)
	}
	for k := range doc.Components.Schemas["Checkout"].Properties {
		want = append(want, k)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("view fields %v\ndocumented  %v", got, want)
	}
}

type reader map[string]*domain.Checkout

func (r reader) Get(_ context.Context, id string) (*domain.Checkout, bool, error) {
	if id == "boom" {
		return nil, false, errors.New("database down")
	}
	c, ok := r[id]
	return c, ok, nil
}

func TestGet(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := domain.New(domain.Config{})
	for i, in := range []any{
		&cartsv1.CheckoutRequested{CheckoutId: "co1", CartId: "cart1", Lines: []*cartsv1.CartLine{{Sku: "A", Quantity: 1}}},
		&ordersv1.OrderPlaced{OrderId: domain.OrderID("co1"), CheckoutId: "co1"},
		&stockv1.AllocationFailed{OrderId: domain.OrderID("co1"), CheckoutId: "co1", Shortages: []*stockv1.Shortage{{Sku: "A", Requested: 1}}},
	} {
		if _, err := c.Handle(in, t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	checkouthttp.New(reader{"co1": c}, nil).Register(mux)
	h := checked(t, mux)

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/checkouts/co1", nil))
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var v domain.View
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if v.Status != "compensating" || v.FailureReason != "out_of_stock" || v.FailureDetail != "A requested 1 available 0" ||
		v.Steps[0].Step != "place_order" || v.Steps[0].CompletedAt == nil || !v.Steps[0].CompletedAt.Equal(t0.Add(time.Second)) ||
		v.CompensatingAt == nil || v.EndedAt != nil {
		t.Errorf("view %s", rec.Body)
	}

	for path, want := range map[string]int{"/checkouts/nope": 404, "/checkouts/boom": 500} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want || rec.Header().Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: %d %s, want %d problem", path, rec.Code, rec.Header().Get("Content-Type"), want)
		}
	}
}

// watched is a reader whose checkout changes when the test says, and which
// wakes long polls like the saga does.
type watched struct {
	mu      sync.Mutex
	c       *domain.Checkout
	waiters []chan struct{}
}

func (w *watched) Get(context.Context, string) (*domain.Checkout, bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.c == nil {
		return nil, false, nil
	}
	c := *w.c
	return &c, true, nil
}

func (w *watched) Changed(string, bool) (<-chan struct{}, func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan struct{})
	w.waiters = append(w.waiters, ch)
	return ch, func() {}
}

func (w *watched) handle(t *testing.T, in any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.c == nil {
		w.c = domain.New(domain.Config{})
	}
	if _, err := w.c.Handle(in, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, ch := range w.waiters {
		close(ch)
	}
	w.waiters = nil
}

// TestLongPoll: ?version=N&wait= answers at once when the checkout is past
// N or unknown, as soon as it changes when not, after the wait when
// nothing happens; bad parameters are 400 problems.
func TestLongPoll(t *testing.T) {
	w := &watched{}
	mux := http.NewServeMux()
	api := checkouthttp.New(w, nil)
	// Re-reads far apart: an answer well before one comes from a wake-up,
	// so the bounds below can be generous on a loaded machine.
	api.FirstRecheck = 5 * time.Second
	api.Register(mux)
	h := checked(t, mux)
	get := func(path string) (*httptest.ResponseRecorder, time.Duration) {
		start := time.Now()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec, time.Since(start)
	}
	version := func(rec *httptest.ResponseRecorder) int64 {
		var v domain.View
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		return v.Version
	}

	// Unknown: 404 at once, not after the wait (nothing would wake it).
	if rec, took := get("/checkouts/co1?wait=10s"); rec.Code != 404 || took > 2*time.Second {
		t.Fatalf("unknown checkout: %d after %s, want 404 at once", rec.Code, took)
	}
	if rec, took := get("/checkouts/co1?wait=10s&until=ended"); rec.Code != 404 || took > 2*time.Second {
		t.Fatalf("unknown checkout until ended: %d after %s, want 404 at once", rec.Code, took)
	}
	w.handle(t, &cartsv1.CheckoutRequested{CheckoutId: "co1", CartId: "cart1", Lines: []*cartsv1.CartLine{{Sku: "A", Quantity: 1}}})
	// Already past the client's version: at once.
	if rec, took := get("/checkouts/co1?version=0&wait=10s"); version(rec) != 1 || took > 2*time.Second {
		t.Fatalf("past version: %d after %s", version(rec), took)
	}
	// Nothing new: the state as it is after the wait.
	if rec, took := get("/checkouts/co1?version=1&wait=300ms"); rec.Code != 200 || version(rec) != 1 || took < 300*time.Millisecond {
		t.Fatalf("no change: %d version %d after %s", rec.Code, version(rec), took)
	}
	// A change while waiting.
	time.AfterFunc(50*time.Millisecond, func() {
		w.handle(t, &ordersv1.OrderPlaced{OrderId: domain.OrderID("co1"), CheckoutId: "co1"})
	})
	if rec, took := get("/checkouts/co1?version=1&wait=10s"); version(rec) != 2 || took > 2*time.Second {
		t.Fatalf("change: version %d after %s", version(rec), took)
	}
	// Until ended: a change is not enough.
	time.AfterFunc(50*time.Millisecond, func() {
		w.handle(t, &stockv1.AllocationFailed{OrderId: domain.OrderID("co1"), CheckoutId: "co1", Shortages: []*stockv1.Shortage{{Sku: "A", Requested: 1}}})
	})
	time.AfterFunc(400*time.Millisecond, func() {
		w.handle(t, &ordersv1.OrderCancelled{OrderId: domain.OrderID("co1"), Reason: ordersv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK})
	})
	rec, took := get("/checkouts/co1?version=2&wait=10s&until=ended")
	var v domain.View
	_ = json.Unmarshal(rec.Body.Bytes(), &v)
	if v.Status != "failed" || took < 400*time.Millisecond || took > 2*time.Second {
		t.Fatalf("until ended: %s after %s", v.Status, took)
	}
	for _, q := range []string{"wait=forever", "wait=-1s", "wait=31s", "wait=", "version=-1", "version=x", "version=", "until=later"} {
		rec, _ := get("/checkouts/co1?" + q)
		if rec.Code != 400 || rec.Header().Get("Content-Type") != "application/problem+json" {
			t.Errorf("?%s: %d %s, want a 400 problem", q, rec.Code, rec.Header().Get("Content-Type"))
		}
	}
}
