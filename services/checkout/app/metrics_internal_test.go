package app

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"github.com/keel-commerce/keel/services/checkout/domain"
)

// The step label speaks the checkout API's words (place_order), not the
// enum's (STEP_PLACE_ORDER).
func TestStepMetricLabel(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := domain.New(domain.Config{})
	for _, in := range []any{&cartsv1.CheckoutRequested{CheckoutId: "co1", CartId: "c1", Lines: []*cartsv1.CartLine{{Sku: "A", Quantity: 1}}},
		&ordersv1.OrderPlaced{OrderId: domain.OrderID("co1"), CheckoutId: "co1"}} {
		d, err := c.Handle(in, now)
		if err != nil {
			t.Fatal(err)
		}
		m.observe(d, c)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, mf := range mfs {
		if mf.GetName() != "keel_checkout_step_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				steps = append(steps, l.GetValue())
			}
		}
	}
	if len(steps) != 1 || steps[0] != "place_order" {
		t.Errorf("step labels %v, want [place_order]", steps)
	}
}
