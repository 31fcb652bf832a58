// Package analytics keeps two hourly read models from the orders, carts
// and checkout contexts:
//
//   - sales per SKU per hour: units sold and revenue (minor units, per
//     currency) of orders confirmed in that hour, and units and revenue
//     cancelled in that hour of orders that had been confirmed. An order's
//     lines come from its OrderPlaced, kept in a helper table keyed by
//     order id until the order is confirmed or cancelled.
//   - the checkout funnel per hour: carts created (carts.CartCreated),
//     checkouts requested (carts.CheckoutRequested), completed
//     (checkout.CheckoutCompleted) and failed by reason
//     (checkout.CheckoutFailed).
//
// Hours are UTC hour buckets of each event's business time (confirmed_at,
// cancelled_at, created_at, requested_at, completed_at, failed_at).
//
// # One stream per row, sums at query time
//
// Every row here is written by one stream only: a sales row is keyed by
// (sku, hour, order) and written by that order's stream; a funnel row is
// one fact (hour, stage, cart or checkout id) written by that cart's or
// checkout's stream. The per-SKU-per-hour figures and the funnel counts
// are SUMs and COUNTs over those rows (SKUHourly, Funnel), served by the
// primary keys and an (hour, sku) index. So the rows are the same for any
// interleaving of streams, and the live builder's concurrent partition
// transactions never read, add to and write back the same row (a shared
// hourly counter row would lose updates between them: each transaction
// reads the count before the other's commit and writes its own + 1).
package analytics

import (
	"context"
	"encoding/json"
	"time"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	checkoutv1 "github.com/keel-commerce/keel/events/checkout/v1"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"github.com/keel-commerce/keel/projections/checkoutstatus"
	"github.com/keel-commerce/keel/projections/readmodel"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Name is the projection's name.
const Name = "analytics"

// Funnel stages.
const (
	StageCartCreated       = "cart_created"
	StageCheckoutRequested = "checkout_requested"
	StageCheckoutCompleted = "checkout_completed"
	StageCheckoutFailed    = "checkout_failed"
)

// Sale is one order's figures for one SKU in one hour.
type Sale struct {
	SKU                   string
	Hour                  time.Time
	OrderID               string
	Currency              string
	UnitsSold             int64
	RevenueMinor          int64
	UnitsCancelled        int64
	RevenueCancelledMinor int64
}

// Sales is the table of Sale rows; SKUHourly sums them per SKU and hour.
// The primary key serves one SKU's hours; the index serves an hour range
// across SKUs.
var Sales = &readmodel.Table[Sale]{
	TableDef: readmodel.TableDef{
		Name: "sku_sales",
		Columns: []readmodel.Column{
			{Name: "sku", Type: readmodel.Text},
			{Name: "hour", Type: readmodel.Time},
			{Name: "order_id", Type: readmodel.Text},
			{Name: "currency", Type: readmodel.Text},
			{Name: "units_sold", Type: readmodel.Int},
			{Name: "revenue_minor", Type: readmodel.Int},
			{Name: "units_cancelled", Type: readmodel.Int},
			{Name: "revenue_cancelled_minor", Type: readmodel.Int},
		},
		Key:     3,
		Indexes: []string{"hour, sku"},
	},
	Encode: func(s Sale) []any {
		return []any{s.SKU, s.Hour, s.OrderID, s.Currency, s.UnitsSold, s.RevenueMinor, s.UnitsCancelled, s.RevenueCancelledMinor}
	},
	Decode: func(v []any) (Sale, error) {
		return Sale{SKU: v[0].(string), Hour: v[1].(time.Time), OrderID: v[2].(string), Currency: v[3].(string),
			UnitsSold: v[4].(int64), RevenueMinor: v[5].(int64), UnitsCancelled: v[6].(int64), RevenueCancelledMinor: v[7].(int64)}, nil
	},
}

// Order is the helper row of an order: its lines per SKU, from
// OrderPlaced, and the hours it was confirmed and cancelled in (zero: not
// yet).
type Order struct {
	OrderID       string
	Currency      string
	Lines         []OrderLine
	ConfirmedHour time.Time
	CancelledHour time.Time
}

// OrderLine is an order's units and amount of one SKU.
type OrderLine struct {
	SKU          string `json:"sku"`
	Quantity     int64  `json:"quantity"`
	RevenueMinor int64  `json:"revenue_minor"`
}

// Orders is the helper table.
var Orders = &readmodel.Table[Order]{
	TableDef: readmodel.TableDef{
		Name: "orders",
		Columns: []readmodel.Column{
			{Name: "order_id", Type: readmodel.Text},
			{Name: "currency", Type: readmodel.Text},
			{Name: "lines", Type: readmodel.JSON},
			{Name: "confirmed_hour", Type: readmodel.Time},
			{Name: "cancelled_hour", Type: readmodel.Time},
		},
		Key: 1,
	},
	Encode: func(o Order) []any {
		lines := o.Lines
		if lines == nil {
			lines = []OrderLine{}
		}
		js, _ := json.Marshal(lines) // plain structs: cannot fail
		return []any{o.OrderID, o.Currency, js, o.ConfirmedHour, o.CancelledHour}
	},
	Decode: func(v []any) (Order, error) {
		o := Order{OrderID: v[0].(string), Currency: v[1].(string), ConfirmedHour: v[3].(time.Time), CancelledHour: v[4].(time.Time)}
		err := json.Unmarshal(v[2].([]byte), &o.Lines)
		return o, err
	},
}

// FunnelFact is one step of the funnel: a cart created, a checkout
// requested, completed or failed (with its reason) in an hour.
type FunnelFact struct {
	Hour      time.Time
	Stage     string
	SubjectID string // cart id for cart_created, else checkout id
	Reason    string // checkout_failed: "out_of_stock", "payment_declined", ...
}

// FunnelFacts is the table of FunnelFact rows; Funnel counts them per hour. Its
// primary key serves an hour range.
var FunnelFacts = &readmodel.Table[FunnelFact]{
	TableDef: readmodel.TableDef{
		Name: "funnel",
		Columns: []readmodel.Column{
			{Name: "hour", Type: readmodel.Time},
			{Name: "stage", Type: readmodel.Text},
			{Name: "subject_id", Type: readmodel.Text},
			{Name: "reason", Type: readmodel.Text},
		},
		Key: 3,
	},
	Encode: func(f FunnelFact) []any { return []any{f.Hour, f.Stage, f.SubjectID, f.Reason} },
	Decode: func(v []any) (FunnelFact, error) {
		return FunnelFact{Hour: v[0].(time.Time), Stage: v[1].(string), SubjectID: v[2].(string), Reason: v[3].(string)}, nil
	},
}

type projection struct{}

// New returns the analytics projection.
func New() readmodel.Projection { return projection{} }

func (projection) Name() string      { return Name }
func (projection) Sources() []string { return []string{"orders", "carts", "checkout"} }
func (projection) Tables() []*readmodel.TableDef {
	return []*readmodel.TableDef{&Sales.TableDef, &Orders.TableDef, &FunnelFacts.TableDef}
}

// Apply folds one event: order events into the sales, funnel events into
// the funnel.
func (projection) Apply(ctx context.Context, rows readmodel.Rows, ev readmodel.Event) error {
	switch m := ev.Message.(type) {
	case *ordersv1.OrderPlaced:
		return placed(ctx, rows, m)
	case *ordersv1.OrderConfirmed:
		return confirmed(ctx, rows, m.GetOrderId(), hourOf(m.GetConfirmedAt(), ev))
	case *ordersv1.OrderCancelled:
		return cancelled(ctx, rows, m.GetOrderId(), hourOf(m.GetCancelledAt(), ev))
	case *cartsv1.CartCreated:
		return FunnelFacts.Put(ctx, rows, FunnelFact{Hour: hourOf(m.GetCreatedAt(), ev), Stage: StageCartCreated, SubjectID: m.GetCartId()})
	case *cartsv1.CheckoutRequested:
		return FunnelFacts.Put(ctx, rows, FunnelFact{Hour: hourOf(m.GetRequestedAt(), ev), Stage: StageCheckoutRequested, SubjectID: m.GetCheckoutId()})
	case *checkoutv1.CheckoutCompleted:
		return FunnelFacts.Put(ctx, rows, FunnelFact{Hour: hourOf(m.GetCompletedAt(), ev), Stage: StageCheckoutCompleted, SubjectID: m.GetCheckoutId()})
	case *checkoutv1.CheckoutFailed:
		return FunnelFacts.Put(ctx, rows, FunnelFact{Hour: hourOf(m.GetFailedAt(), ev), Stage: StageCheckoutFailed,
			SubjectID: m.GetCheckoutId(), Reason: checkoutstatus.ReasonName(m.GetReason())})
	}
	return nil
}

// placed keeps an order's lines, summed per SKU in the order they first
// appear.
func placed(ctx context.Context, rows readmodel.Rows, m *ordersv1.OrderPlaced) error {
	o := Order{OrderID: m.GetOrderId(), Currency: m.GetTotals().GetTotal().GetCurrency()}
	at := map[string]int{}
	for _, l := range m.GetLines() {
		if o.Currency == "" {
			o.Currency = l.GetLineTotal().GetCurrency()
		}
		i, ok := at[l.GetSku()]
		if !ok {
			i = len(o.Lines)
			at[l.GetSku()] = i
			o.Lines = append(o.Lines, OrderLine{SKU: l.GetSku()})
		}
		o.Lines[i].Quantity += l.GetQuantity()
		o.Lines[i].RevenueMinor += l.GetLineTotal().GetAmountMinor()
	}
	return Orders.Put(ctx, rows, o)
}

// confirmed counts the order's lines as sold in hour.
func confirmed(ctx context.Context, rows readmodel.Rows, id string, hour time.Time) error {
	o, ok, err := Orders.Get(ctx, rows, id)
	if err != nil || !ok || !o.ConfirmedHour.IsZero() || !o.CancelledHour.IsZero() {
		return err
	}
	o.ConfirmedHour = hour
	if err := addSales(ctx, rows, o, hour, false); err != nil {
		return err
	}
	return Orders.Put(ctx, rows, o)
}

// cancelled counts a confirmed order's lines as cancelled in hour; an
// order cancelled before confirmation was never sold.
func cancelled(ctx context.Context, rows readmodel.Rows, id string, hour time.Time) error {
	o, ok, err := Orders.Get(ctx, rows, id)
	if err != nil || !ok || !o.CancelledHour.IsZero() {
		return err
	}
	o.CancelledHour = hour
	if !o.ConfirmedHour.IsZero() {
		if err := addSales(ctx, rows, o, hour, true); err != nil {
			return err
		}
	}
	return Orders.Put(ctx, rows, o)
}

func addSales(ctx context.Context, rows readmodel.Rows, o Order, hour time.Time, cancel bool) error {
	for _, l := range o.Lines {
		s, _, err := Sales.Get(ctx, rows, l.SKU, hour, o.OrderID)
		if err != nil {
			return err
		}
		s.SKU, s.Hour, s.OrderID, s.Currency = l.SKU, hour, o.OrderID, o.Currency
		if cancel {
			s.UnitsCancelled += l.Quantity
			s.RevenueCancelledMinor += l.RevenueMinor
		} else {
			s.UnitsSold += l.Quantity
			s.RevenueMinor += l.RevenueMinor
		}
		if err := Sales.Put(ctx, rows, s); err != nil {
			return err
		}
	}
	return nil
}

// hourOf is the UTC hour of an event's business time (its recorded time
// if the payload has none).
func hourOf(ts *timestamppb.Timestamp, ev readmodel.Event) time.Time {
	at := ev.RecordedAt
	if ts != nil {
		at = ts.AsTime()
	}
	return at.UTC().Truncate(time.Hour)
}
