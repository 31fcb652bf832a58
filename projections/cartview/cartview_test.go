package cartview_test

import (
	"reflect"
	"testing"
	"time"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/projections/cartview"
	"github.com/keel-commerce/keel/projections/internal/rmtest"
	"github.com/keel-commerce/keel/projections/readmodel"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var t0 = rmtest.T0

func at(min int) *timestamppb.Timestamp { return rmtest.At(time.Duration(min) * time.Minute) }

func eur(n int64) *typesv1.Money { return &typesv1.Money{AmountMinor: n, Currency: "EUR"} }

func cartLine(sku string, qty, price int64) *cartsv1.CartLine {
	return &cartsv1.CartLine{Sku: sku, Name: "name of " + sku, Quantity: qty, UnitPrice: eur(price), LineTotal: eur(qty * price)}
}

// history returns the next events of a cart's stream s: msgs in order.
func history(s *rmtest.Stream, msgs ...proto.Message) []readmodel.Event {
	return s.Events(t0.Add(time.Hour), msgs...)
}

func stream(id string) *rmtest.Stream { return &rmtest.Stream{Context: "carts", ID: "cart-" + id} }

// checkedOut is a cart's history up to CheckoutRequested.
func checkedOut(s *rmtest.Stream, id string) []readmodel.Event {
	return history(s,
		&cartsv1.CartCreated{CartId: id, CustomerId: "cus-1", Currency: "EUR", CreatedAt: at(0)},
		&cartsv1.LineAdded{CartId: id, Line: cartLine("A", 1, 250), AddedAt: at(1)},
		&cartsv1.LineAdded{CartId: id, Line: cartLine("B", 2, 100), AddedAt: at(2)},
		&cartsv1.LineQuantityChanged{CartId: id, Sku: "A", Quantity: 3, PreviousQuantity: 1, ChangedAt: at(3)},
		&cartsv1.CheckoutRequested{CartId: id, CheckoutId: "co-" + id, CartVersion: 4,
			Lines: []*cartsv1.CartLine{cartLine("A", 3, 250), cartLine("B", 2, 100)}, RequestedAt: at(4)},
	)
}

func TestFold(t *testing.T) {
	open := history(stream("c2"),
		&cartsv1.CartCreated{CartId: "c2", Currency: "EUR", CreatedAt: at(0)},
		&cartsv1.LineAdded{CartId: "c2", Line: cartLine("A", 1, 250), AddedAt: at(1)},
		&cartsv1.LineAdded{CartId: "c2", Line: cartLine("B", 1, 100), AddedAt: at(2)},
		&cartsv1.LineRemoved{CartId: "c2", Sku: "A", RemovedAt: at(3)},
	)
	rows := rmtest.Fold(t, cartview.New(), rmtest.Concat(checkedOut(stream("c1"), "c1"), open)...)

	want := cartview.Cart{CartID: "c1", CustomerID: "cus-1", Currency: "EUR", Status: cartview.StatusCheckingOut,
		Lines: []cartview.Line{
			{SKU: "A", Name: "name of A", Quantity: 3, UnitPriceMinor: 250, LineTotalMinor: 750, Currency: "EUR"},
			{SKU: "B", Name: "name of B", Quantity: 2, UnitPriceMinor: 100, LineTotalMinor: 200, Currency: "EUR"},
		},
		ItemCount: 5, SubtotalMinor: 950, CheckoutID: "co-c1", CreatedAt: at(0).AsTime(), UpdatedAt: at(4).AsTime()}
	if got := rmtest.Get(t, rows, cartview.Carts, "c1"); !reflect.DeepEqual(got, want) {
		t.Errorf("c1:\n got %+v\nwant %+v", got, want)
	}
	want = cartview.Cart{CartID: "c2", Currency: "EUR", Status: cartview.StatusOpen,
		Lines:     []cartview.Line{{SKU: "B", Name: "name of B", Quantity: 1, UnitPriceMinor: 100, LineTotalMinor: 100, Currency: "EUR"}},
		ItemCount: 1, SubtotalMinor: 100, CreatedAt: at(0).AsTime(), UpdatedAt: at(3).AsTime()}
	if got := rmtest.Get(t, rows, cartview.Carts, "c2"); !reflect.DeepEqual(got, want) {
		t.Errorf("c2:\n got %+v\nwant %+v", got, want)
	}
}

func TestStatuses(t *testing.T) {
	for _, tc := range []struct {
		name            string
		then            []proto.Message
		status, reason  string
		order, checkout string
		items           int64
	}{
		{"closed", []proto.Message{&cartsv1.CartClosed{CartId: "c", CheckoutId: "co-c", OrderId: "o1", ClosedAt: at(9)}},
			cartview.StatusClosed, "", "o1", "co-c", 5},
		{"reopened after a failed checkout", []proto.Message{
			&cartsv1.CartReopened{CartId: "c", CheckoutId: "co-c", Reason: "payment_declined", ReopenedAt: at(9)}},
			cartview.StatusOpen, "payment_declined", "", "co-c", 5},
		{"abandoned", []proto.Message{&cartsv1.CartAbandoned{CartId: "c", Reason: cartsv1.AbandonReason_ABANDON_REASON_IDLE,
			LastActivityAt: at(4), AbandonedAt: at(9)}},
			cartview.StatusAbandoned, "idle", "", "co-c", 5},
		{"reopened from abandoned, then cleared", []proto.Message{
			&cartsv1.CartAbandoned{CartId: "c", Reason: cartsv1.AbandonReason_ABANDON_REASON_CUSTOMER, AbandonedAt: at(8)},
			&cartsv1.CartReopened{CartId: "c", ReopenedAt: at(8)},
			&cartsv1.CartCleared{CartId: "c", ClearedAt: at(9)}},
			cartview.StatusOpen, "", "", "co-c", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := stream("c")
			evs := append(checkedOut(s, "c"), history(s, tc.then...)...)
			c := rmtest.Get(t, rmtest.Fold(t, cartview.New(), evs...), cartview.Carts, "c")
			if c.Status != tc.status || c.StatusReason != tc.reason || c.OrderID != tc.order || c.CheckoutID != tc.checkout ||
				c.ItemCount != tc.items || !c.UpdatedAt.Equal(at(9).AsTime()) {
				t.Errorf("got %+v", c)
			}
		})
	}
}

// Rows depend on each cart's stream only: any interleaving that keeps each
// stream's order gives the same rows.
func TestInterleavings(t *testing.T) {
	streams := [][]readmodel.Event{checkedOut(stream("c1"), "c1"), checkedOut(stream("c2"), "c2"), checkedOut(stream("c3"), "c3")}
	base := rmtest.Fold(t, cartview.New(), rmtest.Concat(streams...)...)
	for seed := range uint64(20) {
		rows := rmtest.Fold(t, cartview.New(), rmtest.Interleave(seed, streams...)...)
		for _, id := range []string{"c1", "c2", "c3"} {
			if a, b := rmtest.Get(t, base, cartview.Carts, id), rmtest.Get(t, rows, cartview.Carts, id); !reflect.DeepEqual(a, b) {
				t.Fatalf("seed %d, cart %s:\n%+v\n%+v", seed, id, a, b)
			}
		}
	}
}

// A redelivered event (a relay resend, a replay) changes nothing: the
// machinery skips what a copy already has.
func TestDuplicatesSkipped(t *testing.T) {
	evs := checkedOut(stream("c1"), "c1")
	once := rmtest.Get(t, rmtest.Fold(t, cartview.New(), evs...), cartview.Carts, "c1")
	again := append(append([]readmodel.Event{}, evs[:3]...), evs[1:]...) // v1 v2 v3 v2 v3 v4 v5
	if twice := rmtest.Get(t, rmtest.Fold(t, cartview.New(), again...), cartview.Carts, "c1"); !reflect.DeepEqual(once, twice) {
		t.Fatalf("with duplicates:\n%+v\nwant %+v", twice, once)
	}
}

func TestIgnoresOtherTypes(t *testing.T) {
	s := &rmtest.Stream{Context: "carts", ID: "cart-x"}
	rows := rmtest.Fold(t, cartview.New(),
		s.Event(&cartsv1.CreateCart{CommandId: "k", CartId: "x", Currency: "EUR"}, t0),
		s.Event(&ordersv1.OrderConfirmed{OrderId: "x"}, t0))
	rmtest.Missing(t, rows, cartview.Carts, "x")
}

// A SKU added again replaces its line, as the aggregate keeps one line per
// SKU.
func TestLineAddedAgain(t *testing.T) {
	s := stream("c")
	c := rmtest.Get(t, rmtest.Fold(t, cartview.New(), history(s,
		&cartsv1.CartCreated{CartId: "c", Currency: "EUR", CreatedAt: at(0)},
		&cartsv1.LineAdded{CartId: "c", Line: cartLine("A", 1, 250), AddedAt: at(1)},
		&cartsv1.LineAdded{CartId: "c", Line: cartLine("A", 2, 300), AddedAt: at(2)})...), cartview.Carts, "c")
	if len(c.Lines) != 1 || c.ItemCount != 2 || c.SubtotalMinor != 600 {
		t.Fatalf("got %+v", c)
	}
}
