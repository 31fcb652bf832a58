package stockavailability_test

import (
	"reflect"
	"testing"

	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/projections/internal/rmtest"
	sa "github.com/keel-commerce/keel/projections/stockavailability"
)

func TestQueries(t *testing.T) {
	c := events(&rmtest.Stream{Context: "stock", ID: "stock-C"},
		&stockv1.StockReceived{Sku: "C", WarehouseId: "w3", Quantity: 7, ReceivedAt: at(20)})
	evs := rmtest.Concat(skuHistory("A"), skuHistory("B"), c)
	ctx := t.Context()
	db, schema := rmtest.Load(t, sa.New(), evs...)
	folded := rmtest.Fold(t, sa.New(), evs...)

	levels, total, err := sa.SKU(ctx, db, schema, "A")
	if err != nil {
		t.Fatal(err)
	}
	want := []sa.Level{rmtest.Get(t, folded, sa.Levels, "A", "w1"), rmtest.Get(t, folded, sa.Levels, "A", "w2")}
	if !reflect.DeepEqual(levels, want) {
		t.Errorf("levels of A:\n%+v\nwant %+v", levels, want)
	}
	wantTotal := sa.Total{SKU: "A", OnHand: 9, Reserved: 1, Committed: 3, Available: 8, WarehouseCount: 2, UpdatedAt: at(9).AsTime()}
	if total != wantTotal {
		t.Errorf("total of A: %+v, want %+v", total, wantTotal)
	}
	if l, ok, err := sa.Get(ctx, db, schema, "B", "w2"); err != nil || !ok || l != rmtest.Get(t, folded, sa.Levels, "B", "w2") {
		t.Errorf("get B w2: %+v %v %v", l, ok, err)
	}

	totals, next, err := sa.Totals(ctx, db, schema, []string{"A", "C", "unknown"}, "", 0)
	if err != nil || next != "" || len(totals) != 2 || totals[0] != wantTotal ||
		totals[1] != (sa.Total{SKU: "C", OnHand: 7, Available: 7, WarehouseCount: 1, UpdatedAt: at(20).AsTime()}) {
		t.Errorf("totals of A, C: %+v %q %v", totals, next, err)
	}
	var skus []string
	for after := ""; ; {
		page, next, err := sa.Totals(ctx, db, schema, nil, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, t := range page {
			skus = append(skus, t.SKU)
		}
		if after = next; after == "" {
			break
		}
	}
	if !reflect.DeepEqual(skus, []string{"A", "B", "C"}) {
		t.Errorf("every SKU's total, two a page: %v", skus)
	}

	page, next, err := sa.Warehouse(ctx, db, schema, "w1", "", 1)
	if err != nil || len(page) != 1 || page[0].SKU != "A" || next != "A" {
		t.Fatalf("w1, first page: %+v %q %v", page, next, err)
	}
	page, next, err = sa.Warehouse(ctx, db, schema, "w1", next, 1)
	if err != nil || len(page) != 1 || page[0].SKU != "B" || next != "" {
		t.Fatalf("w1, second page: %+v %q %v", page, next, err)
	}
}
