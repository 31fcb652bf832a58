package checkoutstatus_test

import (
	"reflect"
	"testing"

	cs "github.com/keel-commerce/keel/projections/checkoutstatus"
	"github.com/keel-commerce/keel/projections/internal/rmtest"
	"github.com/keel-commerce/keel/projections/readmodel"
)

func TestQueries(t *testing.T) {
	// Starts: k1 at 0 s, k2 at 0 s (same time: ties go by id), k3 at 0 s, k4 at 0 s.
	evs := rmtest.Concat(completed("k1"), declined("k2"), timingOut("k3", true), timingOut("k4", false))
	ctx := t.Context()
	db, schema := rmtest.Load(t, cs.New(), evs...)

	folded := rmtest.Fold(t, cs.New(), evs...)
	for _, id := range []string{"k1", "k2", "k3", "k4"} {
		got, ok, err := cs.Get(ctx, db, schema, id)
		if err != nil || !ok {
			t.Fatalf("get %s: %v %v", id, ok, err)
		}
		if want := rmtest.Get(t, folded, cs.Checkouts, id); !reflect.DeepEqual(got, want) {
			t.Errorf("%s from the database:\n%+v\nfolded in memory:\n%+v", id, got, want)
		}
	}

	ids := func(f cs.Filter, limit int) []string {
		var out []string
		for _, c := range rmtest.Pages(t, func(after readmodel.Cursor) ([]cs.Checkout, readmodel.Cursor, error) {
			return cs.List(ctx, db, schema, f, after, limit)
		}) {
			out = append(out, c.CheckoutID)
		}
		return out
	}
	for _, tc := range []struct {
		f    cs.Filter
		want []string
	}{
		{cs.Filter{}, []string{"k4", "k3", "k2", "k1"}},
		{cs.Filter{CustomerID: "cus-1", Status: cs.StatusTimedOut}, []string{"k3"}},
		{cs.Filter{Status: cs.StatusCompensating}, []string{"k4"}},
		{cs.Filter{CartID: "cart-of-k2"}, []string{"k2"}},
		{cs.Filter{CustomerID: "nobody"}, nil},
		{cs.Filter{From: at(1).AsTime()}, nil},
		{cs.Filter{From: at(0).AsTime(), To: at(1).AsTime()}, []string{"k4", "k3", "k2", "k1"}},
	} {
		for _, limit := range []int{1, 3, 0} {
			if got := ids(tc.f, limit); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%+v limit %d: %v, want %v", tc.f, limit, got, tc.want)
			}
		}
	}
}
