// Package orderdetail is the whole order as a customer or an operator
// looks at it: lines, totals, address, payment, shipment and the history
// of its status, one row per order.
package orderdetail

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/projections/orderhistory"
	"github.com/keel-commerce/keel/projections/readmodel"
)

// Name is the projection's name.
const Name = "order_detail"

// Money is an amount in minor units of a currency.
type Money struct {
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
}

// Line is an order line.
type Line struct {
	SKU       string `json:"sku"`
	Name      string `json:"name"`
	Quantity  int64  `json:"quantity"`
	UnitPrice Money  `json:"unit_price"`
	LineTotal Money  `json:"line_total"`
}

// Totals are an order's amounts.
type Totals struct {
	Subtotal Money `json:"subtotal"`
	Shipping Money `json:"shipping"`
	Tax      Money `json:"tax"`
	Discount Money `json:"discount"`
	Total    Money `json:"total"`
}

// Customer is who placed the order, in the orders service's and the
// checkout input's words (customer_id).
type Customer struct {
	ID    string `json:"customer_id"`
	Email string `json:"email,omitempty"`
	Name  string `json:"name,omitempty"`
}

// UnmarshalJSON reads the customer id also under "id", the name rows
// written before it was customer_id keep until the copy is rebuilt.
func (c *Customer) UnmarshalJSON(b []byte) error {
	type plain Customer
	var v struct {
		plain
		OldID string `json:"id"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*c = Customer(v.plain)
	if c.ID == "" {
		c.ID = v.OldID
	}
	return nil
}

// Address is a shipping address.
type Address struct {
	Name        string `json:"name,omitempty"`
	Line1       string `json:"line1,omitempty"`
	Line2       string `json:"line2,omitempty"`
	City        string `json:"city,omitempty"`
	Region      string `json:"region,omitempty"`
	PostalCode  string `json:"postal_code,omitempty"`
	CountryCode string `json:"country_code,omitempty"`
}

// Shipment is where the order went.
type Shipment struct {
	ID             string `json:"id"`
	Carrier        string `json:"carrier,omitempty"`
	TrackingNumber string `json:"tracking_number,omitempty"`
}

// Change is one status the order went through.
type Change struct {
	Status string    `json:"status"`
	At     time.Time `json:"at"`
}

// Order is one row.
type Order struct {
	OrderID         string    `json:"order_id"`
	CheckoutID      string    `json:"checkout_id"`
	CartID          string    `json:"cart_id"`
	Customer        Customer  `json:"customer"`
	Status          string    `json:"status"`
	Lines           []Line    `json:"lines"`
	Totals          Totals    `json:"totals"`
	ShippingAddress Address   `json:"shipping_address"`
	PaymentID       string    `json:"payment_id,omitempty"`
	Paid            *Money    `json:"paid,omitempty"`
	CancelReason    string    `json:"cancel_reason,omitempty"`
	CancelDetail    string    `json:"cancel_detail,omitempty"`
	Shipment        *Shipment `json:"shipment,omitempty"`
	History         []Change  `json:"history"`
	PlacedAt        time.Time `json:"placed_at"`
	UpdatedAt       time.Time `json:"updated_at"`
}

// Orders is the table. The nested parts are jsonb: they are read whole,
// never searched.
var Orders = &readmodel.Table[Order]{
	TableDef: readmodel.TableDef{
		Name: "order_details",
		Columns: []readmodel.Column{
			{Name: "order_id", Type: readmodel.Text},
			{Name: "status", Type: readmodel.Text},
			{Name: "placed_at", Type: readmodel.Time},
			{Name: "updated_at", Type: readmodel.Time},
			{Name: "doc", Type: readmodel.JSON},
		},
		Key: 1,
	},
	Encode: func(o Order) []any {
		doc, _ := json.Marshal(o) // plain structs: cannot fail
		return []any{o.OrderID, o.Status, o.PlacedAt, o.UpdatedAt, doc}
	},
	Decode: func(v []any) (Order, error) {
		var o Order
		err := json.Unmarshal(v[4].([]byte), &o)
		o.PlacedAt, o.UpdatedAt = v[2].(time.Time), v[3].(time.Time)
		return o, err
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
		at := readmodel.TimeOf(m.GetPlacedAt())
		o := Order{OrderID: m.GetOrderId(), CheckoutID: m.GetCheckoutId(), CartID: m.GetCartId(),
			Customer: Customer{ID: m.GetCustomer().GetCustomerId(), Email: m.GetCustomer().GetEmail(), Name: m.GetCustomer().GetName()},
			Status:   "pending", Totals: totals(m.GetTotals()), ShippingAddress: address(m.GetShippingAddress()),
			Lines: []Line{}, History: []Change{{Status: "pending", At: at}}, PlacedAt: at, UpdatedAt: at}
		for _, l := range m.GetLines() {
			o.Lines = append(o.Lines, Line{SKU: l.GetSku(), Name: l.GetName(), Quantity: l.GetQuantity(),
				UnitPrice: money(l.GetUnitPrice()), LineTotal: money(l.GetLineTotal())})
		}
		return Orders.Put(ctx, rows, o)
	}
	var id, status string
	var at time.Time
	var change func(*Order)
	switch m := ev.Message.(type) {
	case *ordersv1.OrderConfirmed:
		id, status, at = m.GetOrderId(), "confirmed", readmodel.TimeOf(m.GetConfirmedAt())
	case *ordersv1.OrderPaid:
		id, status, at = m.GetOrderId(), "paid", readmodel.TimeOf(m.GetPaidAt())
		change = func(o *Order) { p := money(m.GetAmount()); o.PaymentID, o.Paid = m.GetPaymentId(), &p }
	case *ordersv1.OrderShipped:
		id, status, at = m.GetOrderId(), "shipped", readmodel.TimeOf(m.GetShippedAt())
		change = func(o *Order) {
			o.Shipment = &Shipment{ID: m.GetShipmentId(), Carrier: m.GetCarrier(), TrackingNumber: m.GetTrackingNumber()}
		}
	case *ordersv1.OrderCancelled:
		id, status, at = m.GetOrderId(), "cancelled", readmodel.TimeOf(m.GetCancelledAt())
		change = func(o *Order) {
			o.CancelReason, o.CancelDetail = orderhistory.CancelReason(m.GetReason()), m.GetDetail()
		}
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
	o.History = append(o.History, Change{Status: status, At: at})
	if change != nil {
		change(&o)
	}
	return Orders.Put(ctx, rows, o)
}

// Get returns the order with id from a copy.
func Get(ctx context.Context, q readmodel.Querier, schema, id string) (Order, bool, error) {
	return readmodel.Find(ctx, q, Orders, schema, id)
}

func money(m *typesv1.Money) Money {
	return Money{AmountMinor: m.GetAmountMinor(), Currency: m.GetCurrency()}
}

func totals(t *typesv1.Totals) Totals {
	return Totals{Subtotal: money(t.GetSubtotal()), Shipping: money(t.GetShipping()), Tax: money(t.GetTax()),
		Discount: money(t.GetDiscount()), Total: money(t.GetTotal())}
}

func address(a *typesv1.Address) Address {
	return Address{Name: a.GetName(), Line1: a.GetLine1(), Line2: a.GetLine2(), City: a.GetCity(),
		Region: a.GetRegion(), PostalCode: a.GetPostalCode(), CountryCode: a.GetCountryCode()}
}
