// Package cartview keeps one row per cart: its owner, currency, status,
// priced lines and totals, and the checkout and order it led to. It reads
// the carts context only, and every row is the fold of one cart's stream
// (cart-<id>), so any interleaving of carts gives the same rows.
//
// Status follows the cart aggregate: open after CartCreated and again
// after CartReopened; checking_out after CheckoutRequested; closed after
// CartClosed (its checkout produced an order); abandoned after
// CartAbandoned. StatusReason says why a cart was abandoned or reopened.
package cartview

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/projections/readmodel"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Name is the projection's name.
const Name = "cart_view"

// Cart statuses.
const (
	StatusOpen        = "open"
	StatusCheckingOut = "checking_out"
	StatusClosed      = "closed"
	StatusAbandoned   = "abandoned"
)

// Cart is a row of the cart view.
type Cart struct {
	CartID     string `json:"cart_id"`
	CustomerID string `json:"customer_id"`
	Currency   string `json:"currency"`
	Status     string `json:"status"`
	// StatusReason is why the cart was abandoned ("idle", "customer") or
	// reopened (the failed checkout's reason); empty otherwise.
	StatusReason  string    `json:"status_reason,omitempty"`
	Lines         []Line    `json:"lines"`
	ItemCount     int64     `json:"item_count"`
	SubtotalMinor int64     `json:"subtotal_minor"`
	CheckoutID    string    `json:"checkout_id,omitempty"` // the last checkout requested (kept when a failed one reopens the cart)
	OrderID       string    `json:"order_id,omitempty"`    // set when closed
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}

// Line is one SKU in a cart; amounts in minor units of Currency.
type Line struct {
	SKU            string `json:"sku"`
	Name           string `json:"name"`
	Quantity       int64  `json:"quantity"`
	UnitPriceMinor int64  `json:"unit_price_minor"`
	LineTotalMinor int64  `json:"line_total_minor"`
	Currency       string `json:"currency"`
}

// Carts is the cart view's table, one row per cart. Its indexes serve
// List: by customer, by status, and all carts, newest first.
var Carts = &readmodel.Table[Cart]{
	TableDef: readmodel.TableDef{
		Name: "carts",
		Columns: []readmodel.Column{
			{Name: "cart_id", Type: readmodel.Text},
			{Name: "customer_id", Type: readmodel.Text},
			{Name: "currency", Type: readmodel.Text},
			{Name: "status", Type: readmodel.Text},
			{Name: "status_reason", Type: readmodel.Text},
			{Name: "lines", Type: readmodel.JSON},
			{Name: "item_count", Type: readmodel.Int},
			{Name: "subtotal_minor", Type: readmodel.Int},
			{Name: "checkout_id", Type: readmodel.Text},
			{Name: "order_id", Type: readmodel.Text},
			{Name: "created_at", Type: readmodel.Time},
			{Name: "updated_at", Type: readmodel.Time},
		},
		Key: 1,
		Indexes: []string{
			"customer_id, created_at DESC, cart_id DESC",
			"status, created_at DESC, cart_id DESC",
			"created_at DESC, cart_id DESC",
		},
	},
	Encode: func(c Cart) []any {
		lines := c.Lines
		if lines == nil {
			lines = []Line{}
		}
		js, _ := json.Marshal(lines) // plain structs: cannot fail
		return []any{c.CartID, c.CustomerID, c.Currency, c.Status, c.StatusReason, js, c.ItemCount,
			c.SubtotalMinor, c.CheckoutID, c.OrderID, c.CreatedAt, c.UpdatedAt}
	},
	Decode: func(v []any) (Cart, error) {
		c := Cart{CartID: v[0].(string), CustomerID: v[1].(string), Currency: v[2].(string), Status: v[3].(string),
			StatusReason: v[4].(string), ItemCount: v[6].(int64), SubtotalMinor: v[7].(int64), CheckoutID: v[8].(string),
			OrderID: v[9].(string), CreatedAt: v[10].(time.Time), UpdatedAt: v[11].(time.Time)}
		err := json.Unmarshal(v[5].([]byte), &c.Lines)
		return c, err
	},
}

type projection struct{}

// New returns the cart view projection.
func New() readmodel.Projection { return projection{} }

func (projection) Name() string                  { return Name }
func (projection) Sources() []string             { return []string{"carts"} }
func (projection) Tables() []*readmodel.TableDef { return []*readmodel.TableDef{&Carts.TableDef} }

// Apply folds one carts event into its cart's row.
func (projection) Apply(ctx context.Context, rows readmodel.Rows, ev readmodel.Event) error {
	var id string
	var ts *timestamppb.Timestamp
	switch m := ev.Message.(type) {
	case *cartsv1.CartCreated:
		id, ts = m.GetCartId(), m.GetCreatedAt()
	case *cartsv1.LineAdded:
		id, ts = m.GetCartId(), m.GetAddedAt()
	case *cartsv1.LineQuantityChanged:
		id, ts = m.GetCartId(), m.GetChangedAt()
	case *cartsv1.LineRemoved:
		id, ts = m.GetCartId(), m.GetRemovedAt()
	case *cartsv1.CartCleared:
		id, ts = m.GetCartId(), m.GetClearedAt()
	case *cartsv1.CheckoutRequested:
		id, ts = m.GetCartId(), m.GetRequestedAt()
	case *cartsv1.CartAbandoned:
		id, ts = m.GetCartId(), m.GetAbandonedAt()
	case *cartsv1.CartReopened:
		id, ts = m.GetCartId(), m.GetReopenedAt()
	case *cartsv1.CartClosed:
		id, ts = m.GetCartId(), m.GetClosedAt()
	default:
		return nil // commands and other contexts' types
	}
	c, _, err := Carts.Get(ctx, rows, id)
	if err != nil {
		return err
	}
	at := ev.RecordedAt
	if ts != nil {
		at = ts.AsTime()
	}
	c.CartID, c.UpdatedAt = id, at
	apply(&c, ev.Message, at)
	c.ItemCount, c.SubtotalMinor = 0, 0
	for _, l := range c.Lines {
		c.ItemCount += l.Quantity
		c.SubtotalMinor += l.LineTotalMinor
	}
	return Carts.Put(ctx, rows, c)
}

// apply changes c by one event of its stream.
func apply(c *Cart, msg any, at time.Time) {
	switch m := msg.(type) {
	case *cartsv1.CartCreated:
		c.CustomerID, c.Currency, c.Status, c.CreatedAt = m.GetCustomerId(), m.GetCurrency(), StatusOpen, at
	case *cartsv1.LineAdded:
		// A cart holds one line per SKU: a SKU added again replaces its
		// line, as the aggregate does.
		l := line(m.GetLine(), c.Currency)
		if i := slices.IndexFunc(c.Lines, func(x Line) bool { return x.SKU == l.SKU }); i >= 0 {
			c.Lines[i] = l
		} else {
			c.Lines = append(c.Lines, l)
		}
	case *cartsv1.LineQuantityChanged:
		for i, l := range c.Lines {
			if l.SKU == m.GetSku() {
				c.Lines[i].Quantity = m.GetQuantity()
				c.Lines[i].LineTotalMinor = m.GetQuantity() * l.UnitPriceMinor
			}
		}
	case *cartsv1.LineRemoved:
		kept := c.Lines[:0]
		for _, l := range c.Lines {
			if l.SKU != m.GetSku() {
				kept = append(kept, l)
			}
		}
		c.Lines = kept
	case *cartsv1.CartCleared:
		c.Lines = nil
	case *cartsv1.CheckoutRequested:
		// The frozen lines are the cart's lines, as priced for checkout.
		c.Lines = nil
		for _, l := range m.GetLines() {
			c.Lines = append(c.Lines, line(l, c.Currency))
		}
		c.Status, c.StatusReason, c.CheckoutID = StatusCheckingOut, "", m.GetCheckoutId()
		if c.CustomerID == "" {
			c.CustomerID = m.GetCustomer().GetCustomerId()
		}
	case *cartsv1.CartAbandoned:
		c.Status = StatusAbandoned
		c.StatusReason = codec.EnumName(m.GetReason())
	case *cartsv1.CartReopened:
		c.Status, c.StatusReason = StatusOpen, m.GetReason()
	case *cartsv1.CartClosed:
		c.Status, c.StatusReason, c.CheckoutID, c.OrderID = StatusClosed, "", m.GetCheckoutId(), m.GetOrderId()
	}
}

func line(l *cartsv1.CartLine, currency string) Line {
	cur := l.GetUnitPrice().GetCurrency()
	if cur == "" {
		cur = currency
	}
	return Line{SKU: l.GetSku(), Name: l.GetName(), Quantity: l.GetQuantity(), UnitPriceMinor: l.GetUnitPrice().GetAmountMinor(),
		LineTotalMinor: l.GetLineTotal().GetAmountMinor(), Currency: cur}
}
