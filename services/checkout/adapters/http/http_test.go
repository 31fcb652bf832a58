package http_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	checkouthttp "github.com/keel-commerce/keel/services/checkout/adapters/http"
	"github.com/keel-commerce/keel/services/checkout/domain"
)

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

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/checkouts/co1", nil))
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
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want || rec.Header().Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: %d %s, want %d problem", path, rec.Code, rec.Header().Get("Content-Type"), want)
		}
	}
}
