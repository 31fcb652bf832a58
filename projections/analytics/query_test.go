package analytics_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	checkoutv1 "github.com/keel-commerce/keel/events/checkout/v1"
	"github.com/keel-commerce/keel/projections/analytics"
	"github.com/keel-commerce/keel/projections/internal/rmtest"
	"github.com/keel-commerce/keel/projections/readmodel"
)

func TestQueries(t *testing.T) {
	streams := [][]readmodel.Event{
		order("o1", confirm("o1", 5)),
		order("o2", confirm("o2", 10), cancel("o2", 70)),
		order("o3", confirm("o3", 65)),
		order("o4", cancel("o4", 20)),
	}
	streams = append(streams, checkoutFlow("c1", 0, 0)...)
	streams = append(streams, checkoutFlow("c2", checkoutv1.FailureReason_FAILURE_REASON_OUT_OF_STOCK, 58)...)
	streams = append(streams, checkoutFlow("c3", checkoutv1.FailureReason_FAILURE_REASON_OUT_OF_STOCK, 61)...)
	streams = append(streams, checkoutFlow("c4", checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_DECLINED, 62)...)
	ctx := t.Context()
	db, schema := rmtest.Load(t, analytics.New(), rmtest.Concat(streams...)...)
	from, to := hour(0), hour(2)

	var all []analytics.SKUHour
	var after analytics.SalesCursor
	for {
		page, next, err := analytics.SKUHourly(ctx, db, schema, analytics.SalesFilter{From: from, To: to}, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if next.SKU == "" {
			break
		}
		if after, err = analytics.ParseSalesCursor(next.String()); err != nil {
			t.Fatal(err)
		}
	}
	want := []analytics.SKUHour{
		{SKU: "A", Hour: hour(0), Currency: "EUR", UnitsSold: 4, RevenueMinor: 400, Orders: 2},
		{SKU: "B", Hour: hour(0), Currency: "EUR", UnitsSold: 2, RevenueMinor: 1000, Orders: 2},
		{SKU: "A", Hour: hour(1), Currency: "EUR", UnitsSold: 2, RevenueMinor: 200, UnitsCancelled: 2, RevenueCancelledMinor: 200, Orders: 2},
		{SKU: "B", Hour: hour(1), Currency: "EUR", UnitsSold: 1, RevenueMinor: 500, UnitsCancelled: 1, RevenueCancelledMinor: 500, Orders: 2},
	}
	if !reflect.DeepEqual(all, want) {
		t.Errorf("per SKU per hour, two a page:\n%+v\nwant %+v", all, want)
	}
	one, _, err := analytics.SKUHourly(ctx, db, schema, analytics.SalesFilter{SKU: "B", From: hour(1), To: to}, analytics.SalesCursor{}, 0)
	if err != nil || !reflect.DeepEqual(one, want[3:]) {
		t.Errorf("B in hour 11: %+v %v", one, err)
	}

	top, err := analytics.TopSKUs(ctx, db, schema, from, to, 1)
	if err != nil || !reflect.DeepEqual(top, []analytics.SKUTotal{{SKU: "A", Currency: "EUR", UnitsSold: 6, RevenueMinor: 600,
		UnitsCancelled: 2, RevenueCancelledMinor: 200}}) {
		t.Errorf("top SKU: %+v %v", top, err)
	}

	funnel, err := analytics.Funnel(ctx, db, schema, from, to)
	wantFunnel := []analytics.FunnelHour{
		{Hour: hour(0), CartsCreated: 2, CheckoutsRequested: 2, Completed: 1, Failed: 0, FailedByReason: map[string]int64{}},
		{Hour: hour(1), CartsCreated: 2, CheckoutsRequested: 2, Completed: 0, Failed: 3,
			FailedByReason: map[string]int64{"out_of_stock": 2, "payment_declined": 1}},
	}
	if err != nil || !reflect.DeepEqual(funnel, wantFunnel) {
		t.Errorf("funnel:\n%+v\nwant %+v (%v)", funnel, wantFunnel, err)
	}

	for _, r := range [][2]time.Time{{}, {to, from}, {from, from.Add(analytics.MaxRange + time.Hour)}} {
		if _, err := analytics.Funnel(ctx, db, schema, r[0], r[1]); !errors.Is(err, analytics.ErrRange) {
			t.Errorf("range %v: %v", r, err)
		}
	}
}
