package cartview_test

import (
	"reflect"
	"testing"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	"github.com/keel-commerce/keel/projections/cartview"
	"github.com/keel-commerce/keel/projections/internal/rmtest"
	"github.com/keel-commerce/keel/projections/readmodel"
)

// The queries against PostgreSQL: rows as the fold made them, filters,
// and pages that together list every match once, newest first.
func TestQueries(t *testing.T) {
	var evs []readmodel.Event
	for i, id := range []string{"c1", "c2", "c3", "c4", "c5"} {
		s := stream(id)
		customer := "cus-1"
		if i%2 == 1 {
			customer = "cus-2"
		}
		evs = append(evs, history(s, &cartsv1.CartCreated{CartId: id, CustomerId: customer, Currency: "EUR", CreatedAt: at(i)},
			&cartsv1.LineAdded{CartId: id, Line: cartLine("A", int64(i+1), 250), AddedAt: at(i + 1)})...)
		if i == 2 {
			evs = append(evs, history(s, &cartsv1.CartAbandoned{CartId: id, Reason: cartsv1.AbandonReason_ABANDON_REASON_IDLE, AbandonedAt: at(30)})...)
		}
	}
	ctx := t.Context()
	db, schema := rmtest.Load(t, cartview.New(), evs...)

	got, ok, err := cartview.Get(ctx, db, schema, "c3")
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	if want := rmtest.Get(t, rmtest.Fold(t, cartview.New(), evs...), cartview.Carts, "c3"); !reflect.DeepEqual(got, want) {
		t.Errorf("from the database:\n%+v\nfolded in memory:\n%+v", got, want)
	}
	if _, ok, err := cartview.Get(ctx, db, schema, "nope"); ok || err != nil {
		t.Errorf("unknown cart: %v %v", ok, err)
	}

	ids := func(f cartview.Filter, limit int) []string {
		var out []string
		for _, c := range rmtest.Pages(t, func(after readmodel.Cursor) ([]cartview.Cart, readmodel.Cursor, error) {
			return cartview.List(ctx, db, schema, f, after, limit)
		}) {
			out = append(out, c.CartID)
		}
		return out
	}
	for _, tc := range []struct {
		f    cartview.Filter
		want []string
	}{
		{cartview.Filter{}, []string{"c5", "c4", "c3", "c2", "c1"}},
		{cartview.Filter{CustomerID: "cus-1"}, []string{"c5", "c3", "c1"}},
		{cartview.Filter{Status: cartview.StatusAbandoned}, []string{"c3"}},
		{cartview.Filter{CustomerID: "cus-1", Status: cartview.StatusOpen}, []string{"c5", "c1"}},
		{cartview.Filter{From: at(1).AsTime(), To: at(4).AsTime()}, []string{"c4", "c3", "c2"}},
	} {
		for _, limit := range []int{1, 2, 10} {
			if got := ids(tc.f, limit); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%+v limit %d: %v, want %v", tc.f, limit, got, tc.want)
			}
		}
	}
}
