package analytics_test

import (
	"reflect"
	"testing"
	"time"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	checkoutv1 "github.com/keel-commerce/keel/events/checkout/v1"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/projections/analytics"
	"github.com/keel-commerce/keel/projections/internal/rmtest"
	"github.com/keel-commerce/keel/projections/readmodel"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var t0 = rmtest.T0

// at is t0 plus min minutes: minute 0–59 is hour 10, 60–119 hour 11.
func at(min int) *timestamppb.Timestamp { return rmtest.At(time.Duration(min) * time.Minute) }

func hour(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }

func events(s *rmtest.Stream, msgs ...proto.Message) []readmodel.Event {
	return s.Events(t0.Add(5*time.Hour), msgs...)
}

func eur(n int64) *typesv1.Money { return &typesv1.Money{AmountMinor: n, Currency: "EUR"} }

func line(sku string, qty, price int64) *ordersv1.OrderLine {
	return &ordersv1.OrderLine{Sku: sku, Quantity: qty, UnitPrice: eur(price), LineTotal: eur(qty * price)}
}

func order(id string, then ...proto.Message) []readmodel.Event {
	placed := &ordersv1.OrderPlaced{OrderId: id, Lines: []*ordersv1.OrderLine{line("A", 2, 100), line("B", 1, 500)},
		Totals: &typesv1.Totals{Total: eur(700)}, PlacedAt: at(0)}
	return events(&rmtest.Stream{Context: "orders", ID: id}, append([]proto.Message{placed}, then...)...)
}

func confirm(id string, min int) *ordersv1.OrderConfirmed {
	return &ordersv1.OrderConfirmed{OrderId: id, ConfirmedAt: at(min)}
}

func cancel(id string, min int) *ordersv1.OrderCancelled {
	return &ordersv1.OrderCancelled{OrderId: id, Reason: ordersv1.CancelReason_CANCEL_REASON_OPERATOR, CancelledAt: at(min)}
}

func TestSales(t *testing.T) {
	rows := rmtest.Fold(t, analytics.New(), rmtest.Concat(
		order("o1", confirm("o1", 5), &ordersv1.OrderPaid{OrderId: "o1", PaidAt: at(6)}),
		order("o2", confirm("o2", 10), cancel("o2", 70)),                   // sold in hour 10, cancelled in 11
		order("o3", cancel("o3", 20)),                                      // never confirmed: never sold
		order("o4", confirm("o4", 30), cancel("o4", 40), cancel("o4", 41)), // cancelled in its hour; a second cancel counts nothing
	)...)
	for _, want := range []analytics.Sale{
		{SKU: "A", Hour: hour(0), OrderID: "o1", Currency: "EUR", UnitsSold: 2, RevenueMinor: 200},
		{SKU: "B", Hour: hour(0), OrderID: "o1", Currency: "EUR", UnitsSold: 1, RevenueMinor: 500},
		{SKU: "A", Hour: hour(0), OrderID: "o2", Currency: "EUR", UnitsSold: 2, RevenueMinor: 200},
		{SKU: "A", Hour: hour(1), OrderID: "o2", Currency: "EUR", UnitsCancelled: 2, RevenueCancelledMinor: 200},
		{SKU: "B", Hour: hour(1), OrderID: "o2", Currency: "EUR", UnitsCancelled: 1, RevenueCancelledMinor: 500},
		{SKU: "A", Hour: hour(0), OrderID: "o4", Currency: "EUR", UnitsSold: 2, RevenueMinor: 200, UnitsCancelled: 2, RevenueCancelledMinor: 200},
	} {
		if got := rmtest.Get(t, rows, analytics.Sales, want.SKU, want.Hour, want.OrderID); got != want {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
	}
	rmtest.Missing(t, rows, analytics.Sales, "A", hour(0), "o3")
	rmtest.Missing(t, rows, analytics.Sales, "A", hour(1), "o1")
}

func checkoutFlow(cart string, fail checkoutv1.FailureReason, min int) [][]readmodel.Event {
	co := "co-" + cart
	carts := events(&rmtest.Stream{Context: "carts", ID: "cart-" + cart},
		&cartsv1.CartCreated{CartId: cart, Currency: "EUR", CreatedAt: at(min)},
		&cartsv1.CheckoutRequested{CartId: cart, CheckoutId: co, RequestedAt: at(min + 1)})
	var end proto.Message = &checkoutv1.CheckoutCompleted{CheckoutId: co, CompletedAt: at(min + 2)}
	if fail != 0 {
		end = &checkoutv1.CheckoutFailed{CheckoutId: co, Reason: fail, FailedAt: at(min + 2)}
	}
	checkout := events(&rmtest.Stream{Context: "checkout", ID: "checkout-" + co},
		&checkoutv1.CheckoutStarted{CheckoutId: co, CartId: cart, StartedAt: at(min + 1)}, end)
	return [][]readmodel.Event{carts, checkout}
}

func TestFunnel(t *testing.T) {
	var streams [][]readmodel.Event
	streams = append(streams, checkoutFlow("c1", 0, 0)...)
	streams = append(streams, checkoutFlow("c2", checkoutv1.FailureReason_FAILURE_REASON_OUT_OF_STOCK, 58)...) // ends in hour 11
	streams = append(streams, events(&rmtest.Stream{Context: "carts", ID: "cart-c3"},
		&cartsv1.CartCreated{CartId: "c3", Currency: "EUR", CreatedAt: at(3)}))
	rows := rmtest.Fold(t, analytics.New(), rmtest.Concat(streams...)...)
	for _, f := range []analytics.FunnelFact{
		{Hour: hour(0), Stage: analytics.StageCartCreated, SubjectID: "c1"},
		{Hour: hour(0), Stage: analytics.StageCheckoutRequested, SubjectID: "co-c1"},
		{Hour: hour(0), Stage: analytics.StageCheckoutCompleted, SubjectID: "co-c1"},
		{Hour: hour(0), Stage: analytics.StageCartCreated, SubjectID: "c2"},
		{Hour: hour(0), Stage: analytics.StageCheckoutRequested, SubjectID: "co-c2"},
		{Hour: hour(1), Stage: analytics.StageCheckoutFailed, SubjectID: "co-c2", Reason: "out_of_stock"},
		{Hour: hour(0), Stage: analytics.StageCartCreated, SubjectID: "c3"},
	} {
		if got := rmtest.Get(t, rows, analytics.FunnelFacts, f.Hour, f.Stage, f.SubjectID); got != f {
			t.Errorf("got %+v, want %+v", got, f)
		}
	}
	rmtest.Missing(t, rows, analytics.FunnelFacts, hour(0), analytics.StageCheckoutRequested, "co-c3")
}

// Rows of several order, cart and checkout streams come out the same for
// any interleaving that keeps each stream's order.
func TestInterleavings(t *testing.T) {
	streams := [][]readmodel.Event{
		order("o1", confirm("o1", 5)),
		order("o2", confirm("o2", 10), cancel("o2", 70)),
		order("o3", confirm("o3", 12)),
	}
	streams = append(streams, checkoutFlow("c1", 0, 0)...)
	streams = append(streams, checkoutFlow("c2", checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_DECLINED, 1)...)
	snapshot := func(rows readmodel.Rows) []any {
		var out []any
		for _, o := range []string{"o1", "o2", "o3"} {
			out = append(out, rmtest.Get(t, rows, analytics.Orders, o))
			for _, sku := range []string{"A", "B"} {
				for h := range 2 {
					s, _, err := analytics.Sales.Get(t.Context(), rows, sku, hour(h), o)
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, s)
				}
			}
		}
		for _, c := range []string{"c1", "c2"} {
			for _, st := range []string{analytics.StageCheckoutRequested, analytics.StageCheckoutCompleted, analytics.StageCheckoutFailed} {
				f, _, err := analytics.FunnelFacts.Get(t.Context(), rows, hour(0), st, "co-"+c)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, f)
			}
		}
		return out
	}
	base := snapshot(rmtest.Fold(t, analytics.New(), rmtest.Concat(streams...)...))
	for seed := range uint64(20) {
		if got := snapshot(rmtest.Fold(t, analytics.New(), rmtest.Interleave(seed, streams...)...)); !reflect.DeepEqual(got, base) {
			t.Fatalf("seed %d:\n%+v\n%+v", seed, got, base)
		}
	}
}

func TestDuplicatesSkipped(t *testing.T) {
	evs := order("o1", confirm("o1", 5))
	rows := rmtest.Fold(t, analytics.New(), evs[0], evs[1], evs[0], evs[1])
	if s := rmtest.Get(t, rows, analytics.Sales, "A", hour(0), "o1"); s.UnitsSold != 2 || s.RevenueMinor != 200 {
		t.Fatalf("with duplicates: %+v", s)
	}
}

func TestIgnoresOtherTypes(t *testing.T) {
	rows := rmtest.Fold(t, analytics.New(), events(&rmtest.Stream{Context: "orders", ID: "o1"},
		&ordersv1.PlaceOrder{CommandId: "k", OrderId: "o1", Lines: []*ordersv1.OrderLine{line("A", 1, 1)}},
		confirm("o1", 1), // confirmed without OrderPlaced seen: nothing to count
		&stockv1.StockReserved{Sku: "A", OrderId: "o1"},
		&cartsv1.LineAdded{CartId: "c"},
		&checkoutv1.CheckoutStarted{CheckoutId: "k"},
	)...)
	rmtest.Missing(t, rows, analytics.Orders, "o1")
	rmtest.Missing(t, rows, analytics.Sales, "A", hour(0), "o1")
}
