package queryapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/consistency"
	"github.com/keel-commerce/keel/events/envelope"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/projections/all"
	"github.com/keel-commerce/keel/projections/orderdetail"
	"github.com/keel-commerce/keel/projections/orderhistory"
	"github.com/keel-commerce/keel/projections/queryapi"
	"github.com/keel-commerce/keel/projections/readmodel"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// server is the API over read models rebuilt from a store of 7 orders of
// one customer (o0..o6, o3 and o5 cancelled, the rest confirmed).
func server(t *testing.T) *httptest.Server {
	t.Helper()
	proj, orders := testenv.Pool(t), testenv.Pool(t)
	// Registered after the pools, so it runs before they close (cleanups
	// run last first): the waiter holds a connection until cancelled.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := pg.New(ctx, orders, pg.Options{})
	testenv.Must(t, err, "store")
	t.Cleanup(st.Close)
	reg := codec.All()
	base := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	for i := range 7 {
		id := fmt.Sprintf("o%d", i)
		at := timestamppb.New(base.Add(time.Duration(i) * time.Minute))
		msgs := []proto.Message{&ordersv1.OrderPlaced{OrderId: id, Customer: &typesv1.Customer{CustomerId: "c1"},
			Totals: &typesv1.Totals{Total: &typesv1.Money{AmountMinor: 1000, Currency: "EUR"}}, PlacedAt: at}}
		if i == 3 || i == 5 {
			msgs = append(msgs, &ordersv1.OrderCancelled{OrderId: id, Reason: ordersv1.CancelReason_CANCEL_REASON_CUSTOMER, CancelledAt: at})
		} else {
			msgs = append(msgs, &ordersv1.OrderConfirmed{OrderId: id, ConfirmedAt: at})
		}
		var evs []envelope.Event
		for _, m := range msgs {
			typ, payload, err := reg.Encode(m)
			testenv.Must(t, err, "encode")
			evs = append(evs, envelope.Event{ID: ksuid.New(), Type: typ, StreamID: "order-" + id, Payload: payload})
		}
		_, err := st.Append(ctx, "order-"+id, store.NoStream, evs)
		testenv.Must(t, err, "append")
	}
	for _, p := range all.All() {
		_, err := readmodel.EnsureActive(ctx, proj, p)
		testenv.Must(t, err, "ensure %s", p.Name())
	}
	for _, p := range []readmodel.Projection{orderhistory.New(), orderdetail.New()} {
		_, err := readmodel.Rebuild(ctx, p, readmodel.RebuildOptions{Pool: proj, Stores: map[string]*pg.Store{"orders": st}})
		testenv.Must(t, err, "rebuild %s", p.Name())
	}
	w := readmodel.NewWaiter(proj, nil)
	go w.Run(ctx) //nolint:errcheck // ends with ctx
	mux := http.NewServeMux()
	queryapi.New(proj, w, nil).Register(mux)
	httpapi.Ops{OpenAPI: queryapi.OpenAPI}.Register(mux)
	srv := httptest.NewServer(openapitest.New(t, queryapi.OpenAPI).Beyond("cursor", "to", "consistency_token", "Consistency-Token").Handler(httpapi.Wrap(mux, nil, nil))) // as keel-projections serves it
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, srv *httptest.Server, path string, hdr ...string) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("GET", srv.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	testenv.Must(t, err, "GET %s", path)
	defer res.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(res.Body).Decode(&body)
	return res.StatusCode, res.Header, body
}

func ids(body map[string]any, key string) []string {
	var out []string
	items, _ := body["items"].([]any)
	for _, it := range items {
		out = append(out, it.(map[string]any)[key].(string))
	}
	return out
}

func TestQueries(t *testing.T) {
	srv := server(t)

	// Pages of 3, newest first, through the cursor.
	var seen []string
	path := "/customers/c1/orders?limit=3"
	for pages := 0; path != ""; pages++ {
		code, _, body := get(t, srv, path)
		if code != 200 || pages > 3 {
			t.Fatalf("GET %s: %d %v", path, code, body)
		}
		seen = append(seen, ids(body, "order_id")...)
		path = ""
		if c, _ := body["next_cursor"].(string); c != "" {
			path = "/customers/c1/orders?limit=3&cursor=" + c
		}
	}
	if want := []string{"o6", "o5", "o4", "o3", "o2", "o1", "o0"}; !slices.Equal(seen, want) {
		t.Fatalf("pages gave %v, want %v", seen, want)
	}
	// Filters.
	if _, _, body := get(t, srv, "/orders?status=cancelled"); !slices.Equal(ids(body, "order_id"), []string{"o5", "o3"}) {
		t.Errorf("status=cancelled: %v", body)
	}
	if _, _, body := get(t, srv, "/orders?from=2026-11-02T09:02:00Z&to=2026-11-02T09:04:00Z"); !slices.Equal(ids(body, "order_id"), []string{"o3", "o2"}) {
		t.Errorf("time range: %v", body)
	}
	// One order.
	code, hdr, body := get(t, srv, "/orders/o5")
	if code != 200 || body["status"] != "cancelled" || body["cancel_reason"] != "customer" || !strings.HasPrefix(hdr.Get("Read-Model-Copy"), "rm_order_detail_") {
		t.Errorf("GET /orders/o5: %d %v %v", code, hdr, body)
	}
	// The customer in the orders service's words: customer_id, not id.
	if c, _ := body["customer"].(map[string]any); c["customer_id"] != "c1" || c["id"] != nil {
		t.Errorf("GET /orders/o5: customer %v, want customer_id c1", body["customer"])
	}
	if code, _, _ := get(t, srv, "/projections"); code != 200 {
		t.Errorf("/projections: %d", code)
	}
	for _, path := range []string{"/analytics/sales", "/analytics/top-skus", "/analytics/funnel"} {
		if code, _, body := get(t, srv, path+"?from=2026-11-02T00:00:00Z&to=2026-11-03T00:00:00Z"); code != 200 || body["items"] == nil {
			t.Errorf("%s: %d %v", path, code, body)
		}
	}
}

func TestBadInput(t *testing.T) {
	srv := server(t)
	for _, c := range []struct {
		path   string
		status int
		typ    string
	}{
		{"/orders/nope", 404, httpapi.TypeNotFound},
		{"/carts/nope", 404, httpapi.TypeNotFound},
		{"/orders?status=lost", 400, httpapi.TypeMalformed},
		{"/orders?from=yesterday", 400, httpapi.TypeMalformed},
		{"/orders?from=2026-11-03T00:00:00Z&to=2026-11-02T00:00:00Z", 400, httpapi.TypeMalformed},
		{"/orders?limit=0", 400, httpapi.TypeMalformed},
		{"/orders?limit=501", 400, httpapi.TypeMalformed},
		{"/orders?cursor=!!", 400, httpapi.TypeMalformed},
		{"/orders?wait=forever", 400, httpapi.TypeMalformed},
		{"/orders?consistency_token=12/34", 400, queryapi.TypeBadToken},
		{"/analytics/sales", 400, httpapi.TypeMalformed},
		{"/analytics/funnel?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", 400, httpapi.TypeMalformed},
		{"/orders/o1?consistency_token=" + consistency.New("carts", map[string]int64{"cart-1": 1}).String(), 400, queryapi.TypeBadToken},
	} {
		code, hdr, body := get(t, srv, c.path)
		if code != c.status || body["type"] != c.typ || hdr.Get("Content-Type") != httpapi.ContentTypeProblem {
			t.Errorf("GET %s: %d %s %v, want %d %s problem", c.path, code, hdr.Get("Content-Type"), body, c.status, c.typ)
		}
	}
}

func TestConsistencyToken(t *testing.T) {
	srv := server(t)
	// Applied already: answers at once.
	tok := consistency.New("orders", map[string]int64{"order-o2": 2})
	if code, _, body := get(t, srv, "/orders/o2", consistency.Header, tok.String()); code != 200 || body["status"] != "confirmed" {
		t.Fatalf("token already applied: %d %v", code, body)
	}
	// Never reached: a 503 saying how far behind, with Retry-After.
	tok = consistency.New("orders", map[string]int64{"order-o2": 3})
	code, hdr, body := get(t, srv, "/orders/o2?wait=150ms&consistency_token="+tok.String())
	streams, _ := body["streams"].(map[string]any)
	o2, _ := streams["order-o2"].(map[string]any)
	if code != 503 || body["type"] != queryapi.TypeBehind || hdr.Get("Retry-After") == "" || o2["applied_version"] != 2.0 || o2["wanted_version"] != 3.0 {
		t.Fatalf("token ahead of the read model: %d %v %v", code, hdr, body)
	}
}

// The OpenAPI document names exactly the routes served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	testenv.Must(t, json.Unmarshal(queryapi.OpenAPI, &doc), "openapi.json")
	var documented, routed []string
	for path, ops := range doc.Paths {
		for m := range ops {
			documented = append(documented, strings.ToUpper(m)+" "+path)
		}
	}
	for _, r := range queryapi.Routes {
		routed = append(routed, r.Method+" "+r.Path)
	}
	routed = append(routed, "GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json")
	slices.Sort(documented)
	slices.Sort(routed)
	if !strings.HasPrefix(doc.OpenAPI, "3.0") || !slices.Equal(documented, routed) {
		t.Fatalf("openapi %s\ndocumented %v\nrouted     %v", doc.OpenAPI, documented, routed)
	}
}
