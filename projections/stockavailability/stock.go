// Package stockavailability keeps the units of every SKU in every
// warehouse: on hand, reserved, committed and available. Totals per SKU
// across warehouses are a SUM over its rows (Totals), served by the
// primary key (sku, warehouse_id).
//
// # How the events move the numbers
//
// As the stock aggregate (services/stock/domain) does:
//
//   - StockReceived: on hand += quantity.
//   - StockAdjusted: on hand += delta (signed).
//   - StockReserved: reserved += quantity.
//   - ReservationReleased, ReservationExpired: reserved -= quantity (the
//     units are free again; on hand does not change).
//   - ReservationCommitted: reserved -= quantity and on hand -= quantity
//     (the units leave the warehouse for their order); committed +=
//     quantity. Committed is the running total of units deducted by
//     commits, never decreased.
//   - Available is always on hand − reserved: what can still be reserved.
//   - OrderAllocated only sums up StockReserved events of the SKUs' streams
//     (counting it would count them twice) and AllocationFailed reserves
//     nothing: both are ignored.
//
// # Why any interleaving gives the same rows
//
// The stock service writes everything about a SKU (every warehouse) to
// one stream, stock-<sku>; failed allocations go to allocation-<order>,
// which this projection ignores. Even so the fold does not rely on it:
// every event only adds to or subtracts from a row's counters, and
// updated_at is the latest event time seen, so a row is the same for any
// order of its events, whichever streams they come from.
package stockavailability

import (
	"context"
	"time"

	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/projections/readmodel"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Name is the projection's name.
const Name = "stock_availability"

// Level is a row: the units of one SKU in one warehouse.
type Level struct {
	SKU         string    `json:"sku"`
	WarehouseID string    `json:"warehouse_id"`
	OnHand      int64     `json:"on_hand"`
	Reserved    int64     `json:"reserved"`
	Committed   int64     `json:"committed"`
	Available   int64     `json:"available"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Levels is the table, one row per SKU per warehouse. The primary key
// serves a SKU's rows and its totals; the index serves a warehouse's
// SKUs.
var Levels = &readmodel.Table[Level]{
	TableDef: readmodel.TableDef{
		Name: "stock_levels",
		Columns: []readmodel.Column{
			{Name: "sku", Type: readmodel.Text},
			{Name: "warehouse_id", Type: readmodel.Text},
			{Name: "on_hand", Type: readmodel.Int},
			{Name: "reserved", Type: readmodel.Int},
			{Name: "committed", Type: readmodel.Int},
			{Name: "available", Type: readmodel.Int},
			{Name: "updated_at", Type: readmodel.Time},
		},
		Key:     2,
		Indexes: []string{"warehouse_id, sku"},
	},
	Encode: func(l Level) []any {
		return []any{l.SKU, l.WarehouseID, l.OnHand, l.Reserved, l.Committed, l.Available, l.UpdatedAt}
	},
	Decode: func(v []any) (Level, error) {
		return Level{SKU: v[0].(string), WarehouseID: v[1].(string), OnHand: v[2].(int64), Reserved: v[3].(int64),
			Committed: v[4].(int64), Available: v[5].(int64), UpdatedAt: v[6].(time.Time)}, nil
	},
}

type projection struct{}

// New returns the stock availability projection.
func New() readmodel.Projection { return projection{} }

func (projection) Name() string                  { return Name }
func (projection) Sources() []string             { return []string{"stock"} }
func (projection) Tables() []*readmodel.TableDef { return []*readmodel.TableDef{&Levels.TableDef} }

// move is what one event does to a row.
type move struct {
	sku, warehouse              string
	onHand, reserved, committed int64
	at                          *timestamppb.Timestamp
}

// Apply adds one stock event's movement to its SKU's row in its warehouse.
func (projection) Apply(ctx context.Context, rows readmodel.Rows, ev readmodel.Event) error {
	var m move
	switch e := ev.Message.(type) {
	case *stockv1.StockReceived:
		m = move{sku: e.GetSku(), warehouse: e.GetWarehouseId(), onHand: e.GetQuantity(), at: e.GetReceivedAt()}
	case *stockv1.StockAdjusted:
		m = move{sku: e.GetSku(), warehouse: e.GetWarehouseId(), onHand: e.GetDelta(), at: e.GetAdjustedAt()}
	case *stockv1.StockReserved:
		m = move{sku: e.GetSku(), warehouse: e.GetWarehouseId(), reserved: e.GetQuantity(), at: e.GetReservedAt()}
	case *stockv1.ReservationReleased:
		m = move{sku: e.GetSku(), warehouse: e.GetWarehouseId(), reserved: -e.GetQuantity(), at: e.GetReleasedAt()}
	case *stockv1.ReservationExpired:
		m = move{sku: e.GetSku(), warehouse: e.GetWarehouseId(), reserved: -e.GetQuantity(), at: e.GetExpiredAt()}
	case *stockv1.ReservationCommitted:
		q := e.GetQuantity()
		m = move{sku: e.GetSku(), warehouse: e.GetWarehouseId(), onHand: -q, reserved: -q, committed: q, at: e.GetCommittedAt()}
	default:
		return nil
	}
	l, _, err := Levels.Get(ctx, rows, m.sku, m.warehouse)
	if err != nil {
		return err
	}
	l.SKU, l.WarehouseID = m.sku, m.warehouse
	l.OnHand += m.onHand
	l.Reserved += m.reserved
	l.Committed += m.committed
	l.Available = l.OnHand - l.Reserved
	at := ev.RecordedAt
	if m.at != nil {
		at = m.at.AsTime()
	}
	if at.After(l.UpdatedAt) {
		l.UpdatedAt = at
	}
	return Levels.Put(ctx, rows, l)
}
