package stockavailability_test

import (
	"reflect"
	"testing"
	"time"

	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/projections/internal/rmtest"
	"github.com/keel-commerce/keel/projections/readmodel"
	sa "github.com/keel-commerce/keel/projections/stockavailability"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var t0 = rmtest.T0

func at(min int) *timestamppb.Timestamp { return rmtest.At(time.Duration(min) * time.Minute) }

func events(s *rmtest.Stream, msgs ...proto.Message) []readmodel.Event {
	return s.Events(t0.Add(time.Hour), msgs...)
}

// skuHistory is a SKU's stream: stock in two warehouses, reservations for
// three orders, one committed, one released, one expired, an adjustment.
func skuHistory(sku string) []readmodel.Event {
	return events(&rmtest.Stream{Context: "stock", ID: "stock-" + sku},
		&stockv1.StockReceived{Sku: sku, WarehouseId: "w1", Quantity: 10, ReceivedAt: at(0)},
		&stockv1.StockReceived{Sku: sku, WarehouseId: "w2", Quantity: 4, ReceivedAt: at(1)},
		&stockv1.StockReserved{ReservationId: "r1", Sku: sku, WarehouseId: "w1", Quantity: 3, OrderId: "o1", ReservedAt: at(2)},
		&stockv1.StockReserved{ReservationId: "r2", Sku: sku, WarehouseId: "w1", Quantity: 2, OrderId: "o2", ReservedAt: at(3)},
		&stockv1.StockReserved{ReservationId: "r3", Sku: sku, WarehouseId: "w2", Quantity: 4, OrderId: "o3", ReservedAt: at(4)},
		&stockv1.ReservationCommitted{ReservationId: "r1", Sku: sku, WarehouseId: "w1", Quantity: 3, OrderId: "o1", CommittedAt: at(5)},
		&stockv1.ReservationReleased{ReservationId: "r2", Sku: sku, WarehouseId: "w1", Quantity: 2, OrderId: "o2",
			Reason: stockv1.ReleaseReason_RELEASE_REASON_PAYMENT_FAILED, ReleasedAt: at(6)},
		&stockv1.ReservationExpired{ReservationId: "r3", Sku: sku, WarehouseId: "w2", Quantity: 4, OrderId: "o3", ExpiredAt: at(7)},
		&stockv1.StockReserved{ReservationId: "r4", Sku: sku, WarehouseId: "w2", Quantity: 1, OrderId: "o4", ReservedAt: at(8)},
		&stockv1.StockAdjusted{Sku: sku, WarehouseId: "w1", Delta: -2, Reason: stockv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGED, AdjustedAt: at(9)},
	)
}

func TestMovements(t *testing.T) {
	rows := rmtest.Fold(t, sa.New(), skuHistory("A")...)
	// w1: 10 received − 3 committed − 2 damaged = 5 on hand; r2 released, nothing reserved.
	want := sa.Level{SKU: "A", WarehouseID: "w1", OnHand: 5, Reserved: 0, Committed: 3, Available: 5, UpdatedAt: at(9).AsTime()}
	if got := rmtest.Get(t, rows, sa.Levels, "A", "w1"); got != want {
		t.Errorf("w1: got %+v, want %+v", got, want)
	}
	// w2: 4 on hand; r3 expired, r4 holds 1.
	want = sa.Level{SKU: "A", WarehouseID: "w2", OnHand: 4, Reserved: 1, Committed: 0, Available: 3, UpdatedAt: at(8).AsTime()}
	if got := rmtest.Get(t, rows, sa.Levels, "A", "w2"); got != want {
		t.Errorf("w2: got %+v, want %+v", got, want)
	}
}

// Each row is a sum of its events' movements, so it is the same for any
// interleaving of the streams — even the per-event orders a stream does
// not have (a SKU's events split over several streams).
func TestInterleavings(t *testing.T) {
	a, b := skuHistory("A"), skuHistory("B")
	split := [][]readmodel.Event{a, b[:4], b[4:]}
	for i := range split[2] {
		split[2][i].StreamID, split[2][i].Version = "stock-B-more", int64(i+1)
	}
	base := rmtest.Fold(t, sa.New(), rmtest.Concat(split...)...)
	for seed := range uint64(20) {
		rows := rmtest.Fold(t, sa.New(), rmtest.Interleave(seed, split...)...)
		for _, k := range [][2]string{{"A", "w1"}, {"A", "w2"}, {"B", "w1"}, {"B", "w2"}} {
			x, y := rmtest.Get(t, base, sa.Levels, k[0], k[1]), rmtest.Get(t, rows, sa.Levels, k[0], k[1])
			if !reflect.DeepEqual(x, y) {
				t.Fatalf("seed %d %v:\n%+v\n%+v", seed, k, x, y)
			}
		}
	}
}

func TestDuplicatesSkipped(t *testing.T) {
	evs := skuHistory("A")
	again := append(append([]readmodel.Event{}, evs[:6]...), evs[3:]...)
	rows := rmtest.Fold(t, sa.New(), again...)
	if got := rmtest.Get(t, rows, sa.Levels, "A", "w1"); got.OnHand != 5 || got.Committed != 3 || got.Reserved != 0 {
		t.Fatalf("with duplicates: %+v", got)
	}
}

func TestIgnoresOtherTypes(t *testing.T) {
	rows := rmtest.Fold(t, sa.New(), events(&rmtest.Stream{Context: "stock", ID: "allocation-o9"},
		&stockv1.AllocationFailed{OrderId: "o9", Shortages: []*stockv1.Shortage{{Sku: "A", Requested: 5}}, FailedAt: at(1)},
		&stockv1.OrderAllocated{OrderId: "o9", Lines: []*stockv1.AllocatedLine{{Sku: "A", WarehouseId: "w1", Quantity: 2}}},
		&stockv1.ReceiveStock{CommandId: "k", Sku: "A", WarehouseId: "w1", Quantity: 3},
		&ordersv1.OrderConfirmed{OrderId: "o9"},
	)...)
	rmtest.Missing(t, rows, sa.Levels, "A", "w1")
}
