// Package orderhistory is the order list: one compact row per order, for
// a customer's order history and for operators' lists filtered by status
// and time. The whole order is in package orderdetail.
package orderhistory

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/keel-commerce/keel/events/codec"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"github.com/keel-commerce/keel/projections/readmodel"
)

// Name is the projection's name.
const Name = "order_history"

// Order is one row: an order as a list shows it.
type Order struct {
	OrderID      string    `json:"order_id"`
	CustomerID   string    `json:"customer_id"`
	Status       string    `json:"status"`
	TotalMinor   int64     `json:"total_minor"`
	Currency     string    `json:"currency"`
	Lines        int64     `json:"lines"`
	Items        int64     `json:"items"`
	CancelReason string    `json:"cancel_reason,omitempty"`
	PlacedAt     time.Time `json:"placed_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// Orders is the table.
var Orders = &readmodel.Table[Order]{
	TableDef: readmodel.TableDef{
		Name: "orders",
		Columns: []readmodel.Column{
			{Name: "order_id", Type: readmodel.Text},
			{Name: "customer_id", Type: readmodel.Text},
			{Name: "status", Type: readmodel.Text},
			{Name: "total_minor", Type: readmodel.Int},
			{Name: "currency", Type: readmodel.Text},
			{Name: "lines", Type: readmodel.Int},
			{Name: "items", Type: readmodel.Int},
			{Name: "cancel_reason", Type: readmodel.Text},
			{Name: "placed_at", Type: readmodel.Time},
			{Name: "updated_at", Type: readmodel.Time},
		},
		Key: 1,
		// Newest first, per customer, per status, and overall.
		Indexes: []string{
			"customer_id, placed_at DESC, order_id DESC",
			"status, placed_at DESC, order_id DESC",
			"placed_at DESC, order_id DESC",
		},
	},
	Encode: func(o Order) []any {
		return []any{o.OrderID, o.CustomerID, o.Status, o.TotalMinor, o.Currency, o.Lines, o.Items, o.CancelReason, o.PlacedAt, o.UpdatedAt}
	},
	Decode: func(v []any) (Order, error) {
		return Order{OrderID: v[0].(string), CustomerID: v[1].(string), Status: v[2].(string), TotalMinor: v[3].(int64),
			Currency: v[4].(string), Lines: v[5].(int64), Items: v[6].(int64), CancelReason: v[7].(string),
			PlacedAt: v[8].(time.Time), UpdatedAt: v[9].(time.Time)}, nil
	},
}

type projection struct{}

// New returns the projection.
func New() readmodel.Projection { return projection{} }

func (projection) Name() string                  { return Name }
func (projection) Sources() []string             { return []string{"orders"} }
func (projection) Tables() []*readmodel.TableDef { return []*readmodel.TableDef{&Orders.TableDef} }

func (projection) Apply(ctx context.Context, rows readmodel.Rows, ev readmodel.Event) error {
	if m, ok := ev.Message.(*ordersv1.OrderPlaced); ok {
		o := Order{OrderID: m.GetOrderId(), CustomerID: m.GetCustomer().GetCustomerId(), Status: "pending",
			TotalMinor: m.GetTotals().GetTotal().GetAmountMinor(), Currency: m.GetTotals().GetTotal().GetCurrency(),
			Lines: int64(len(m.GetLines())), PlacedAt: readmodel.TimeOf(m.GetPlacedAt())}
		for _, l := range m.GetLines() {
			o.Items += l.GetQuantity()
		}
		o.UpdatedAt = o.PlacedAt
		return Orders.Put(ctx, rows, o)
	}
	var id, status, reason string
	var at time.Time
	switch m := ev.Message.(type) {
	case *ordersv1.OrderConfirmed:
		id, status, at = m.GetOrderId(), "confirmed", readmodel.TimeOf(m.GetConfirmedAt())
	case *ordersv1.OrderPaid:
		id, status, at = m.GetOrderId(), "paid", readmodel.TimeOf(m.GetPaidAt())
	case *ordersv1.OrderShipped:
		id, status, at = m.GetOrderId(), "shipped", readmodel.TimeOf(m.GetShippedAt())
	case *ordersv1.OrderCancelled:
		id, status, at = m.GetOrderId(), "cancelled", readmodel.TimeOf(m.GetCancelledAt())
		reason = CancelReason(m.GetReason())
	default:
		return nil
	}
	o, ok, err := Orders.Get(ctx, rows, id)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("order %s: %s before it was placed", id, ev.Type)
	}
	o.Status, o.UpdatedAt = status, at
	if reason != "" {
		o.CancelReason = reason
	}
	return Orders.Put(ctx, rows, o)
}

// CancelReason names a cancel reason as the orders API takes and shows it
// ("out_of_stock", codec.EnumName).
func CancelReason(r ordersv1.CancelReason) string { return codec.EnumName(r) }

// Filter selects orders; zero fields do not filter.
type Filter struct {
	CustomerID string
	Status     string
	From, To   time.Time // placed at From ≤ t < To
}

// List returns up to limit orders matching f, newest first, after the
// cursor, and the cursor of the next page ("" at the end).
func List(ctx context.Context, q readmodel.Querier, schema string, f Filter, after readmodel.Cursor, limit int) ([]Order, readmodel.Cursor, error) {
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if f.CustomerID != "" {
		where = append(where, "customer_id = "+arg(f.CustomerID))
	}
	if f.Status != "" {
		where = append(where, "status = "+arg(f.Status))
	}
	if !f.From.IsZero() {
		where = append(where, "placed_at >= "+arg(f.From))
	}
	if !f.To.IsZero() {
		where = append(where, "placed_at < "+arg(f.To))
	}
	if after.ID != "" {
		where = append(where, fmt.Sprintf("(placed_at, order_id) < (%s, %s)", arg(after.At), arg(after.ID)))
	}
	sql := readmodel.SelectAll(&Orders.TableDef, schema)
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += " ORDER BY placed_at DESC, order_id DESC LIMIT " + arg(limit+1)
	list, err := readmodel.Query(ctx, q, Orders, sql, args...)
	if err != nil {
		return nil, readmodel.Cursor{}, err
	}
	var next readmodel.Cursor
	if len(list) > limit {
		list = list[:limit]
		last := list[limit-1]
		next = readmodel.Cursor{At: last.PlacedAt, ID: last.OrderID}
	}
	return list, next, nil
}
