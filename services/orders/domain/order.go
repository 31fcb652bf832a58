// Package domain is the orders context's Order aggregate: a plain struct
// with no I/O whose command methods check invariants and return the events
// they decide (orders v1 protobuf messages), and whose Apply is the only
// place state changes. Time and ids are passed in, never read here.
//
// # State machine
//
//	(none) --Place--> pending --Confirm--> confirmed --MarkPaid--> paid --Ship--> shipped
//	pending, confirmed --Cancel--> cancelled
//
// Confirmed means stock is reserved and payment authorized; paid means the
// payment was captured. A paid order is not cancelled here: the money must
// be refunded first (ErrRefundRequired), which is a payments decision, so
// Cancel on a paid order is refused. Shipped and cancelled are final.
// Every other command in a state is refused with a *TransitionError.
//
// # One order per checkout
//
// An order's id is derived from its checkout: OrderID(checkoutID) is
// "order-" + checkoutID, so the stream a checkout writes to is fixed and a
// retried or duplicated PlaceOrder lands on the same aggregate. Place on an
// order already placed by the same checkout is an idempotent no-op (no
// events, no error); by another checkout it is ErrOtherCheckout.
//
// # Money
//
// Amounts are integer minor units with one currency per order; a line or
// total in another currency is ErrCurrencyMismatch, and sums or products
// that would overflow int64 are ErrOverflow. Line totals, subtotal and total
// are computed here; totals given by the caller must match them.
package domain

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
)

// Sentinel errors; wrapped with detail, test with errors.Is.
var (
	// ErrInvalid reports a command with missing or malformed fields.
	ErrInvalid = errors.New("invalid order command")
	// ErrCurrencyMismatch reports an amount in another currency than the order's.
	ErrCurrencyMismatch = errors.New("currency mismatch")
	// ErrOverflow reports amounts too large to add or multiply in int64 minor units.
	ErrOverflow = errors.New("amount overflow")
	// ErrTotalsMismatch reports caller-given totals that differ from the computed ones.
	ErrTotalsMismatch = errors.New("totals do not match the lines")
	// ErrOtherCheckout reports Place on an order that another checkout placed.
	ErrOtherCheckout = errors.New("order placed by another checkout")
	// ErrAmountMismatch reports a payment amount that differs from the order total.
	ErrAmountMismatch = errors.New("paid amount differs from order total")
	// ErrRefundRequired reports Cancel on a paid order: refund the payment first.
	ErrRefundRequired = errors.New("paid order needs a refund before it can be cancelled")
)

// Status is where an order is in its life; the zero value StatusNone is an
// order not yet placed.
type Status int

// The states of an order; see the package comment for the transitions.
const (
	// StatusNone is an order not placed yet (an empty stream).
	StatusNone Status = iota
	// StatusPending is placed, awaiting stock and payment authorization.
	StatusPending
	// StatusConfirmed has stock reserved and payment authorized.
	StatusConfirmed
	// StatusPaid has its payment captured.
	StatusPaid
	// StatusShipped was handed to a carrier; final.
	StatusShipped
	// StatusCancelled will not be fulfilled; final.
	StatusCancelled
)

// String names the status as used in errors and APIs.
func (s Status) String() string {
	switch s {
	case StatusNone:
		return "none"
	case StatusPending:
		return "pending"
	case StatusConfirmed:
		return "confirmed"
	case StatusPaid:
		return "paid"
	case StatusShipped:
		return "shipped"
	case StatusCancelled:
		return "cancelled"
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// TransitionError reports a command that the order's status does not allow.
type TransitionError struct {
	// From is the order's status when the command arrived.
	From Status
	// Action is the refused command: "place", "confirm", "mark paid", "cancel" or "ship".
	Action string
}

func (e *TransitionError) Error() string {
	if e.From == StatusNone {
		// Not a state a client knows: the order was never created.
		return fmt.Sprintf("cannot %s an order that does not exist", e.Action)
	}
	return fmt.Sprintf("cannot %s an order that is %s", e.Action, e.From)
}

// Unwrap returns ErrRefundRequired for a cancel of a paid order, so callers
// can tell the customer what to do instead; nil otherwise.
func (e *TransitionError) Unwrap() error {
	if e.From == StatusPaid && e.Action == "cancel" {
		return ErrRefundRequired
	}
	return nil
}

// IsTransition reports whether err is (or wraps) a *TransitionError.
func IsTransition(err error) bool {
	var t *TransitionError
	return errors.As(err, &t)
}

// OrderID is the id of the one order a checkout can create: "order-" + checkoutID.
func OrderID(checkoutID string) string { return "order-" + checkoutID }

// Order is the state of one order folded from its events. The zero value
// (or New) is an order not yet placed. Not safe for concurrent use.
type Order struct {
	id         string
	checkoutID string
	status     Status
	currency   string
	total      int64
}

// New returns an order with no events; stream is unused because the id
// comes from the OrderPlaced event. It fits command.Aggregate.New.
func New(string) *Order { return &Order{} }

// ID returns the order id, empty before it is placed.
func (o *Order) ID() string { return o.id }

// CheckoutID returns the checkout that placed the order.
func (o *Order) CheckoutID() string { return o.checkoutID }

// Status returns where the order is in its life.
func (o *Order) Status() Status { return o.status }

// Total returns the amount the customer pays.
func (o *Order) Total() *typesv1.Money { return money(o.total, o.currency) }

// Apply folds one event into o and returns it; unknown events are ignored.
// It never fails: events are facts. It fits command.Aggregate.Apply.
func Apply(o *Order, event proto.Message) *Order {
	if o == nil {
		o = &Order{}
	}
	switch e := event.(type) {
	case *ordersv1.OrderPlaced:
		o.id, o.checkoutID, o.status = e.GetOrderId(), e.GetCheckoutId(), StatusPending
		o.currency = e.GetTotals().GetTotal().GetCurrency()
		o.total = e.GetTotals().GetTotal().GetAmountMinor()
	case *ordersv1.OrderConfirmed:
		o.status = StatusConfirmed
	case *ordersv1.OrderPaid:
		o.status = StatusPaid
	case *ordersv1.OrderShipped:
		o.status = StatusShipped
	case *ordersv1.OrderCancelled:
		o.status = StatusCancelled
	}
	return o
}

// Place decides OrderPlaced from a checkout's PlaceOrder. cmd.OrderId may be
// empty; if set it must equal OrderID(cmd.CheckoutId). Line totals,
// subtotal and total are computed; given ones must match.
func (o *Order) Place(cmd *ordersv1.PlaceOrder, now time.Time) ([]proto.Message, error) {
	if cmd.GetCheckoutId() == "" {
		return nil, fmt.Errorf("%w: checkout id is required", ErrInvalid)
	}
	id := OrderID(cmd.GetCheckoutId())
	if o.status != StatusNone {
		if o.checkoutID == cmd.GetCheckoutId() {
			return nil, nil // the same checkout again: already done
		}
		return nil, fmt.Errorf("%w: order %s belongs to checkout %s, not %s", ErrOtherCheckout, o.id, o.checkoutID, cmd.GetCheckoutId())
	}
	if cmd.GetOrderId() != "" && cmd.GetOrderId() != id {
		return nil, fmt.Errorf("%w: order id %q must be %q", ErrInvalid, cmd.GetOrderId(), id)
	}
	if cmd.GetCustomer() == nil {
		return nil, fmt.Errorf("%w: customer is required", ErrInvalid)
	}
	if cmd.GetShippingAddress() == nil {
		return nil, fmt.Errorf("%w: shipping address is required", ErrInvalid)
	}
	lines, totals, err := price(cmd.GetLines(), cmd.GetTotals())
	if err != nil {
		return nil, err
	}
	return []proto.Message{&ordersv1.OrderPlaced{
		OrderId: id, CheckoutId: cmd.GetCheckoutId(), CartId: cmd.GetCartId(),
		Customer: cmd.GetCustomer(), Lines: lines, Totals: totals,
		ShippingAddress: cmd.GetShippingAddress(), PlacedAt: timestamppb.New(now),
	}}, nil
}

// price checks the lines and computes their totals and the order totals.
func price(in []*ordersv1.OrderLine, given *typesv1.Totals) ([]*ordersv1.OrderLine, *typesv1.Totals, error) {
	if len(in) == 0 {
		return nil, nil, fmt.Errorf("%w: an order needs at least one line", ErrInvalid)
	}
	currency := in[0].GetUnitPrice().GetCurrency()
	if currency == "" {
		return nil, nil, fmt.Errorf("%w: line 0 has no currency", ErrInvalid)
	}
	seen := map[string]bool{}
	lines := make([]*ordersv1.OrderLine, len(in))
	var subtotal int64
	for i, l := range in {
		switch {
		case l.GetSku() == "":
			return nil, nil, fmt.Errorf("%w: line %d has no sku", ErrInvalid, i)
		case seen[l.GetSku()]:
			return nil, nil, fmt.Errorf("%w: sku %s appears twice", ErrInvalid, l.GetSku())
		case l.GetQuantity() <= 0:
			return nil, nil, fmt.Errorf("%w: line %s quantity %d must be > 0", ErrInvalid, l.GetSku(), l.GetQuantity())
		case l.GetUnitPrice() == nil:
			return nil, nil, fmt.Errorf("%w: line %s has no unit price", ErrInvalid, l.GetSku())
		}
		seen[l.GetSku()] = true
		unit, err := amountIn(l.GetUnitPrice(), currency, "unit price of "+l.GetSku())
		if err != nil {
			return nil, nil, err
		}
		lt, err := mul(unit, l.GetQuantity())
		if err != nil {
			return nil, nil, fmt.Errorf("line %s: %w", l.GetSku(), err)
		}
		if g := l.GetLineTotal(); g != nil && (g.GetAmountMinor() != lt || g.GetCurrency() != currency) {
			return nil, nil, fmt.Errorf("%w: line %s total %d %s, computed %d %s", ErrTotalsMismatch, l.GetSku(), g.GetAmountMinor(), g.GetCurrency(), lt, currency)
		}
		if subtotal, err = add(subtotal, lt); err != nil {
			return nil, nil, fmt.Errorf("subtotal: %w", err)
		}
		lines[i] = &ordersv1.OrderLine{Sku: l.GetSku(), Name: l.GetName(), Quantity: l.GetQuantity(),
			UnitPrice: money(unit, currency), LineTotal: money(lt, currency)}
	}
	shipping, err := amountIn(given.GetShipping(), currency, "shipping")
	if err != nil {
		return nil, nil, err
	}
	tax, err := amountIn(given.GetTax(), currency, "tax")
	if err != nil {
		return nil, nil, err
	}
	discount, err := amountIn(given.GetDiscount(), currency, "discount")
	if err != nil {
		return nil, nil, err
	}
	gross, err := add(subtotal, shipping)
	if err == nil {
		gross, err = add(gross, tax)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("total: %w", err)
	}
	if discount > gross {
		return nil, nil, fmt.Errorf("%w: discount %d exceeds %d", ErrInvalid, discount, gross)
	}
	total := gross - discount
	if g := given.GetSubtotal(); g != nil && (g.GetAmountMinor() != subtotal || g.GetCurrency() != currency) {
		return nil, nil, fmt.Errorf("%w: subtotal %d %s, computed %d %s", ErrTotalsMismatch, g.GetAmountMinor(), g.GetCurrency(), subtotal, currency)
	}
	if g := given.GetTotal(); g != nil && (g.GetAmountMinor() != total || g.GetCurrency() != currency) {
		return nil, nil, fmt.Errorf("%w: total %d %s, computed %d %s", ErrTotalsMismatch, g.GetAmountMinor(), g.GetCurrency(), total, currency)
	}
	return lines, &typesv1.Totals{Subtotal: money(subtotal, currency), Shipping: money(shipping, currency),
		Tax: money(tax, currency), Discount: money(discount, currency), Total: money(total, currency)}, nil
}

// Confirm decides OrderConfirmed once stock and payment are secured; only
// a pending order can be confirmed.
func (o *Order) Confirm(now time.Time) ([]proto.Message, error) {
	if o.status != StatusPending {
		return nil, &TransitionError{From: o.status, Action: "confirm"}
	}
	return []proto.Message{&ordersv1.OrderConfirmed{OrderId: o.id, ConfirmedAt: timestamppb.New(now)}}, nil
}

// MarkPaid decides OrderPaid for a confirmed order whose payment paymentID
// captured amount, which must equal the order total.
func (o *Order) MarkPaid(paymentID string, amount *typesv1.Money, now time.Time) ([]proto.Message, error) {
	if o.status != StatusConfirmed {
		return nil, &TransitionError{From: o.status, Action: "mark paid"}
	}
	if paymentID == "" || amount == nil {
		return nil, fmt.Errorf("%w: payment id and amount are required", ErrInvalid)
	}
	if amount.GetCurrency() != o.currency {
		return nil, fmt.Errorf("%w: paid in %q, order in %q", ErrCurrencyMismatch, amount.GetCurrency(), o.currency)
	}
	if amount.GetAmountMinor() != o.total {
		return nil, fmt.Errorf("%w: paid %d, total %d", ErrAmountMismatch, amount.GetAmountMinor(), o.total)
	}
	return []proto.Message{&ordersv1.OrderPaid{OrderId: o.id, PaymentId: paymentID,
		Amount: money(amount.GetAmountMinor(), o.currency), PaidAt: timestamppb.New(now)}}, nil
}

// Cancel decides OrderCancelled for a pending or confirmed order. A paid
// order is refused with a *TransitionError wrapping ErrRefundRequired.
func (o *Order) Cancel(reason ordersv1.CancelReason, detail string, now time.Time) ([]proto.Message, error) {
	if o.status != StatusPending && o.status != StatusConfirmed {
		return nil, &TransitionError{From: o.status, Action: "cancel"}
	}
	if _, ok := ordersv1.CancelReason_name[int32(reason)]; !ok || reason == ordersv1.CancelReason_CANCEL_REASON_UNSPECIFIED {
		return nil, fmt.Errorf("%w: cancel reason %v", ErrInvalid, reason)
	}
	return []proto.Message{&ordersv1.OrderCancelled{OrderId: o.id, Reason: reason, Detail: detail,
		CancelledAt: timestamppb.New(now)}}, nil
}

// Ship decides OrderShipped for a paid order handed to carrier.
func (o *Order) Ship(shipmentID, carrier, trackingNumber string, now time.Time) ([]proto.Message, error) {
	if o.status != StatusPaid {
		return nil, &TransitionError{From: o.status, Action: "ship"}
	}
	if shipmentID == "" || carrier == "" {
		return nil, fmt.Errorf("%w: shipment id and carrier are required", ErrInvalid)
	}
	return []proto.Message{&ordersv1.OrderShipped{OrderId: o.id, ShipmentId: shipmentID, Carrier: carrier,
		TrackingNumber: trackingNumber, ShippedAt: timestamppb.New(now)}}, nil
}
