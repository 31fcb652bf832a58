// Package domain is the carts context's Cart aggregate: a plain struct with
// no I/O whose command methods check invariants and return the events they
// decide (carts v1 protobuf messages); Apply is the only place state
// changes. Time, ids, prices (from the catalog) and the idle timeout are
// passed in, never read here.
//
// # State machine
//
//	(none) --Create--> open
//	open --AddLine, ChangeQuantity, RemoveLine, Clear--> open
//	open --RequestCheckout--> checking out (frozen at its version)
//	open --Abandon--> abandoned
//	checking out --Reopen (checkout failed)--> open
//	abandoned --Reopen--> open
//	checking out --Close (order placed)--> closed (final)
//
// A frozen cart refuses every change; a cart holds at most MaxLines lines,
// one per SKU, each of 1..MaxQuantity units. Money is integer minor units
// in the one currency the cart was created with.
package domain

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
)

// Limits of a cart.
const (
	// MaxLines is the most lines (SKUs) a cart holds.
	MaxLines = 100
	// MaxQuantity is the most units of one SKU a line holds.
	MaxQuantity = 999
	// DefaultIdleTimeout is how long a cart may sit untouched before it can
	// be abandoned as idle, when no timeout is configured.
	DefaultIdleTimeout = 24 * time.Hour
)

// Sentinel errors; wrapped with detail, test with errors.Is.
var (
	// ErrInvalid reports a command with missing or malformed fields.
	ErrInvalid = errors.New("invalid cart command")
	// ErrCurrencyMismatch reports a price in another currency than the cart's.
	ErrCurrencyMismatch = errors.New("currency mismatch")
	// ErrOverflow reports amounts too large for int64 minor units.
	ErrOverflow = errors.New("amount overflow")
	// ErrTooManyLines reports a line beyond MaxLines.
	ErrTooManyLines = errors.New("too many lines")
	// ErrQuantity reports a quantity outside 1..MaxQuantity.
	ErrQuantity = errors.New("quantity out of range")
	// ErrNoSuchLine reports a SKU that is not in the cart.
	ErrNoSuchLine = errors.New("no such line")
	// ErrEmpty reports a checkout of a cart without lines.
	ErrEmpty = errors.New("cart is empty")
	// ErrVersionMismatch reports a checkout of a cart that moved on since the customer saw it.
	ErrVersionMismatch = errors.New("cart version mismatch")
	// ErrNotIdle reports an idle abandon before the timeout passed.
	ErrNotIdle = errors.New("cart is not idle long enough")
	// ErrOtherCheckout reports Reopen or Close naming another checkout than the cart's.
	ErrOtherCheckout = errors.New("another checkout")
)

// Status is where a cart is in its life; the zero value StatusNone is a
// cart not yet created.
type Status int

// The states of a cart; see the package comment for the transitions.
const (
	// StatusNone is a cart not created yet (an empty stream).
	StatusNone Status = iota
	// StatusOpen is editable.
	StatusOpen
	// StatusCheckingOut is frozen while its checkout runs.
	StatusCheckingOut
	// StatusAbandoned was given up; it can be reopened.
	StatusAbandoned
	// StatusClosed became an order; final.
	StatusClosed
)

// String names the status as used in errors and APIs.
func (s Status) String() string {
	switch s {
	case StatusNone:
		return "none"
	case StatusOpen:
		return "open"
	case StatusCheckingOut:
		return "checking out"
	case StatusAbandoned:
		return "abandoned"
	case StatusClosed:
		return "closed"
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// TransitionError reports a command that the cart's status does not allow.
type TransitionError struct {
	// From is the cart's status when the command arrived.
	From Status
	// Action is the refused command, e.g. "add a line to".
	Action string
}

func (e *TransitionError) Error() string {
	if e.From == StatusNone {
		// Not a state a client knows: the cart was never created.
		return fmt.Sprintf("cannot %s a cart that does not exist", e.Action)
	}
	return fmt.Sprintf("cannot %s a cart that is %s", e.Action, e.From)
}

// IsTransition reports whether err is (or wraps) a *TransitionError.
func IsTransition(err error) bool {
	var t *TransitionError
	return errors.As(err, &t)
}

// Product is a catalog entry as the cart needs it to price a line.
type Product struct {
	SKU       string
	Name      string
	UnitPrice *typesv1.Money
}

type line struct {
	name     string
	quantity int64
	unit     int64
}

// Cart is the state of one cart folded from its events. The zero value (or
// New) is a cart not yet created. Not safe for concurrent use.
type Cart struct {
	id, customerID, currency string
	status                   Status
	skus                     []string // in the order they were added
	lines                    map[string]line
	version                  int64
	lastActivity             time.Time
	checkoutID               string
}

// New returns a cart with no events; it fits command.Aggregate.New.
func New(string) *Cart { return &Cart{} }

// ID returns the cart id, empty before it is created.
func (c *Cart) ID() string { return c.id }

// Status returns where the cart is in its life.
func (c *Cart) Status() Status { return c.status }

// Version is the number of events folded: the cart's stream version.
func (c *Cart) Version() int64 { return c.version }

// LastActivity is when the cart last changed.
func (c *Cart) LastActivity() time.Time { return c.lastActivity }

// Currency is the ISO 4217 code every price in the cart is in.
func (c *Cart) Currency() string { return c.currency }

// CustomerID is the customer the cart was created for (may be empty).
func (c *Cart) CustomerID() string { return c.customerID }

// CheckoutID is the running checkout of a frozen cart, else empty.
func (c *Cart) CheckoutID() string { return c.checkoutID }

// Line is one priced line of a cart, as read models and APIs show it.
type Line struct {
	SKU, Name string
	Quantity  int64
	// UnitPrice is in minor units of the cart's currency.
	UnitPrice int64
}

// Lines returns a copy of the cart's lines in the order they were added.
func (c *Cart) Lines() []Line {
	out := make([]Line, 0, len(c.skus))
	for _, sku := range c.skus {
		l := c.lines[sku]
		out = append(out, Line{SKU: sku, Name: l.name, Quantity: l.quantity, UnitPrice: l.unit})
	}
	return out
}

// Clone returns a deep copy of c, so a caller can fold decided events into
// it without touching the state it was decided on.
func (c *Cart) Clone() *Cart {
	d := *c
	d.skus = slices.Clone(c.skus)
	if c.lines != nil {
		d.lines = make(map[string]line, len(c.lines))
		for k, v := range c.lines {
			d.lines[k] = v
		}
	}
	return &d
}

// Apply folds one event into c and returns it; unknown events are ignored
// but still count toward the version. It never fails: events are facts.
// It fits command.Aggregate.Apply.
func Apply(c *Cart, event proto.Message) *Cart {
	if c == nil {
		c = &Cart{}
	}
	c.version++
	switch e := event.(type) {
	case *cartsv1.CartCreated:
		c.id, c.customerID, c.currency, c.status = e.GetCartId(), e.GetCustomerId(), e.GetCurrency(), StatusOpen
		c.lines = map[string]line{}
		c.lastActivity = e.GetCreatedAt().AsTime()
	case *cartsv1.LineAdded:
		l := e.GetLine()
		c.skus = append(c.skus, l.GetSku())
		c.lines[l.GetSku()] = line{name: l.GetName(), quantity: l.GetQuantity(), unit: l.GetUnitPrice().GetAmountMinor()}
		c.lastActivity = e.GetAddedAt().AsTime()
	case *cartsv1.LineQuantityChanged:
		l := c.lines[e.GetSku()]
		l.quantity = e.GetQuantity()
		c.lines[e.GetSku()] = l
		c.lastActivity = e.GetChangedAt().AsTime()
	case *cartsv1.LineRemoved:
		delete(c.lines, e.GetSku())
		c.skus = slices.DeleteFunc(c.skus, func(s string) bool { return s == e.GetSku() })
		c.lastActivity = e.GetRemovedAt().AsTime()
	case *cartsv1.CartCleared:
		c.lines, c.skus = map[string]line{}, nil
		c.lastActivity = e.GetClearedAt().AsTime()
	case *cartsv1.CheckoutRequested:
		c.status, c.checkoutID = StatusCheckingOut, e.GetCheckoutId()
		c.lastActivity = e.GetRequestedAt().AsTime()
	case *cartsv1.CartAbandoned:
		c.status = StatusAbandoned
	case *cartsv1.CartReopened:
		c.status, c.checkoutID = StatusOpen, ""
		c.lastActivity = e.GetReopenedAt().AsTime()
	case *cartsv1.CartClosed:
		c.status = StatusClosed
	}
	return c
}

func (c *Cart) money(n int64) *typesv1.Money {
	return &typesv1.Money{AmountMinor: n, Currency: c.currency}
}

func checkQuantity(q int64) error {
	if q <= 0 || q > MaxQuantity {
		return fmt.Errorf("%w: %d not in 1..%d", ErrQuantity, q, MaxQuantity)
	}
	return nil
}

// Create decides CartCreated for a new cart in currency (ISO 4217).
func (c *Cart) Create(cartID, customerID, currency string, now time.Time) ([]proto.Message, error) {
	if c.status != StatusNone {
		return nil, &TransitionError{From: c.status, Action: "create"}
	}
	if cartID == "" || len(currency) != 3 {
		return nil, fmt.Errorf("%w: cart id and a 3-letter currency are required", ErrInvalid)
	}
	return []proto.Message{&cartsv1.CartCreated{CartId: cartID, CustomerId: customerID, Currency: currency, CreatedAt: timestamppb.New(now)}}, nil
}

// AddLine decides LineAdded for a new SKU, priced from p, or
// LineQuantityChanged adding quantity to the SKU's line.
func (c *Cart) AddLine(p Product, quantity int64, now time.Time) ([]proto.Message, error) {
	if c.status != StatusOpen {
		return nil, &TransitionError{From: c.status, Action: "add a line to"}
	}
	if p.SKU == "" || p.UnitPrice == nil || p.UnitPrice.GetAmountMinor() < 0 {
		return nil, fmt.Errorf("%w: sku and a non-negative unit price are required", ErrInvalid)
	}
	if p.UnitPrice.GetCurrency() != c.currency {
		return nil, fmt.Errorf("%w: %s priced in %q, cart in %q", ErrCurrencyMismatch, p.SKU, p.UnitPrice.GetCurrency(), c.currency)
	}
	if err := checkQuantity(quantity); err != nil {
		return nil, err
	}
	if l, ok := c.lines[p.SKU]; ok {
		if err := checkQuantity(l.quantity + quantity); err != nil {
			return nil, err
		}
		return []proto.Message{&cartsv1.LineQuantityChanged{CartId: c.id, Sku: p.SKU, Quantity: l.quantity + quantity,
			PreviousQuantity: l.quantity, ChangedAt: timestamppb.New(now)}}, nil
	}
	if len(c.lines) >= MaxLines {
		return nil, fmt.Errorf("%w: at most %d", ErrTooManyLines, MaxLines)
	}
	unit := p.UnitPrice.GetAmountMinor()
	if unit > math.MaxInt64/quantity {
		return nil, fmt.Errorf("%w: %d × %d", ErrOverflow, unit, quantity)
	}
	return []proto.Message{&cartsv1.LineAdded{CartId: c.id, Line: &cartsv1.CartLine{Sku: p.SKU, Name: p.Name, Quantity: quantity,
		UnitPrice: c.money(unit), LineTotal: c.money(unit * quantity)}, AddedAt: timestamppb.New(now)}}, nil
}

// ChangeQuantity decides LineQuantityChanged for a SKU in the cart; the
// same quantity again is a no-op.
func (c *Cart) ChangeQuantity(sku string, quantity int64, now time.Time) ([]proto.Message, error) {
	if c.status != StatusOpen {
		return nil, &TransitionError{From: c.status, Action: "change a quantity in"}
	}
	l, ok := c.lines[sku]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoSuchLine, sku)
	}
	if err := checkQuantity(quantity); err != nil {
		return nil, err
	}
	if quantity == l.quantity {
		return nil, nil
	}
	if l.unit > math.MaxInt64/quantity {
		return nil, fmt.Errorf("%w: %d × %d", ErrOverflow, l.unit, quantity)
	}
	return []proto.Message{&cartsv1.LineQuantityChanged{CartId: c.id, Sku: sku, Quantity: quantity,
		PreviousQuantity: l.quantity, ChangedAt: timestamppb.New(now)}}, nil
}

// RemoveLine decides LineRemoved for a SKU in the cart.
func (c *Cart) RemoveLine(sku string, now time.Time) ([]proto.Message, error) {
	if c.status != StatusOpen {
		return nil, &TransitionError{From: c.status, Action: "remove a line from"}
	}
	if _, ok := c.lines[sku]; !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoSuchLine, sku)
	}
	return []proto.Message{&cartsv1.LineRemoved{CartId: c.id, Sku: sku, RemovedAt: timestamppb.New(now)}}, nil
}

// Clear decides CartCleared; clearing an empty cart is a no-op.
func (c *Cart) Clear(now time.Time) ([]proto.Message, error) {
	if c.status != StatusOpen {
		return nil, &TransitionError{From: c.status, Action: "clear"}
	}
	if len(c.lines) == 0 {
		return nil, nil
	}
	return []proto.Message{&cartsv1.CartCleared{CartId: c.id, ClearedAt: timestamppb.New(now)}}, nil
}

// RequestCheckout decides CheckoutRequested: the cart frozen at its current
// version with its priced lines and totals, under checkoutID. A non-zero
// cmd.ExpectedVersion must equal the cart's version.
func (c *Cart) RequestCheckout(cmd *cartsv1.RequestCheckout, checkoutID string, now time.Time) ([]proto.Message, error) {
	if c.status != StatusOpen {
		return nil, &TransitionError{From: c.status, Action: "check out"}
	}
	if checkoutID == "" || cmd.GetShippingAddress() == nil || cmd.GetPaymentMethod() == nil || cmd.GetCustomer() == nil {
		return nil, fmt.Errorf("%w: checkout id, customer, shipping address and payment method are required", ErrInvalid)
	}
	if v := cmd.GetExpectedVersion(); v != 0 && v != c.version {
		return nil, fmt.Errorf("%w: expected %d, cart at %d", ErrVersionMismatch, v, c.version)
	}
	if len(c.lines) == 0 {
		return nil, ErrEmpty
	}
	lines := make([]*cartsv1.CartLine, 0, len(c.skus))
	var subtotal int64
	for _, sku := range c.skus {
		l := c.lines[sku]
		lt := l.unit * l.quantity // checked when the quantity was set
		if lt > math.MaxInt64-subtotal {
			return nil, fmt.Errorf("%w: subtotal", ErrOverflow)
		}
		subtotal += lt
		lines = append(lines, &cartsv1.CartLine{Sku: sku, Name: l.name, Quantity: l.quantity, UnitPrice: c.money(l.unit), LineTotal: c.money(lt)})
	}
	totals := &typesv1.Totals{Subtotal: c.money(subtotal), Shipping: c.money(0), Tax: c.money(0), Discount: c.money(0), Total: c.money(subtotal)}
	return []proto.Message{&cartsv1.CheckoutRequested{CartId: c.id, CheckoutId: checkoutID, CartVersion: c.version,
		Lines: lines, Totals: totals, Customer: cmd.GetCustomer(), ShippingAddress: cmd.GetShippingAddress(),
		PaymentMethod: cmd.GetPaymentMethod(), RequestedAt: timestamppb.New(now)}}, nil
}

// Abandon decides CartAbandoned for an open cart. An idle abandon (the
// durable timer's) needs now - LastActivity ≥ idle (DefaultIdleTimeout
// when idle ≤ 0); a customer may abandon at any time.
func (c *Cart) Abandon(reason cartsv1.AbandonReason, idle time.Duration, now time.Time) ([]proto.Message, error) {
	if c.status != StatusOpen {
		return nil, &TransitionError{From: c.status, Action: "abandon"}
	}
	switch reason {
	case cartsv1.AbandonReason_ABANDON_REASON_IDLE:
		if idle <= 0 {
			idle = DefaultIdleTimeout
		}
		if now.Sub(c.lastActivity) < idle {
			return nil, fmt.Errorf("%w: last activity %s, timeout %s", ErrNotIdle, c.lastActivity.Format(time.RFC3339), idle)
		}
	case cartsv1.AbandonReason_ABANDON_REASON_CUSTOMER:
	default:
		return nil, fmt.Errorf("%w: abandon reason %v", ErrInvalid, reason)
	}
	return []proto.Message{&cartsv1.CartAbandoned{CartId: c.id, Reason: reason,
		LastActivityAt: timestamppb.New(c.lastActivity), AbandonedAt: timestamppb.New(now)}}, nil
}

// Reopen decides CartReopened for a cart whose checkout failed (checkoutID,
// if given, must be its checkout) or that was abandoned.
func (c *Cart) Reopen(checkoutID, reason string, now time.Time) ([]proto.Message, error) {
	switch c.status {
	case StatusCheckingOut:
		if checkoutID != "" && checkoutID != c.checkoutID {
			return nil, fmt.Errorf("%w: %s, cart is in %s", ErrOtherCheckout, checkoutID, c.checkoutID)
		}
		checkoutID = c.checkoutID
	case StatusAbandoned:
		checkoutID = ""
	default:
		return nil, &TransitionError{From: c.status, Action: "reopen"}
	}
	return []proto.Message{&cartsv1.CartReopened{CartId: c.id, CheckoutId: checkoutID, Reason: reason, ReopenedAt: timestamppb.New(now)}}, nil
}

// Close decides CartClosed for a cart whose checkout checkoutID produced orderID.
func (c *Cart) Close(checkoutID, orderID string, now time.Time) ([]proto.Message, error) {
	if c.status != StatusCheckingOut {
		return nil, &TransitionError{From: c.status, Action: "close"}
	}
	if checkoutID != c.checkoutID {
		return nil, fmt.Errorf("%w: %s, cart is in %s", ErrOtherCheckout, checkoutID, c.checkoutID)
	}
	if orderID == "" {
		return nil, fmt.Errorf("%w: order id is required", ErrInvalid)
	}
	return []proto.Message{&cartsv1.CartClosed{CartId: c.id, CheckoutId: checkoutID, OrderId: orderID, ClosedAt: timestamppb.New(now)}}, nil
}
