// Package domain holds the checkout saga's state machine: one Checkout per
// checkout id, folded from its own events (keel.checkout.v1), deciding what
// to record and which commands to send when another context's event or a
// timer arrives. It does no I/O; time is passed in, and every id it makes
// (order, payment, command ids) is derived from the checkout id, so a
// replayed or duplicated input can never produce a different command.
//
// # The flow
//
//	CheckoutRequested ─► started        ── PlaceOrder
//	OrderPlaced       ─► order placed   ── ReserveStock (ttl = checkout timeout)
//	OrderAllocated (or the first StockReserved of the order)
//	                  ─► stock reserved ── AuthorizePayment, payment timer
//	PaymentAuthorized ─► confirming     ── ConfirmOrder, CommitReservation, CapturePayment
//	OrderConfirmed + PaymentCaptured (either order)
//	                  ─►                ── MarkOrderPaid
//	OrderPaid + ReservationCommitted (either order)
//	                  ─► completed      ── CloseCart
//
// An order's life after the saga: confirmed (stock reserved, payment
// authorized), then paid once the capture succeeded, which makes it ready
// to fulfil (the orders service ships only paid orders). The saga tells
// orders about the capture only once it saw the order confirmed too: the
// orders service refuses to mark an order paid before it is confirmed,
// and the saga does not rely on the two commands arriving in order. A
// checkout completes only when its order is paid, so a completed
// checkout never leaves an order confirmed but unpaid.
//
// # Failure and compensation
//
// A failure (AllocationFailed, PaymentDeclined, PaymentAuthorizationTimedOut,
// the payment timer, the checkout deadline, an order cancelled or a
// reservation released/expired under the saga's feet) records
// CheckoutCompensating and sends, in reverse, the compensation of every step
// whose command was sent: VoidPayment (RefundPayment once captured),
// ReleaseReservation, CancelOrder. A step the failure itself undid needs
// none: AllocationFailed (out of stock, reason OUT_OF_STOCK) is the stock
// service's answer to the saga's ReserveStock and reserved nothing, so it
// only cancels the order, at once rather than on the deadline. A compensation goes on the same topic and
// key as its forward command, so it is handled after it: if the forward
// command takes effect late, the compensation still undoes it. The saga
// waits only for the compensations of the steps it saw complete
// (steps_to_compensate); a step that never completed has nothing to wait
// for. When the last awaited compensation is confirmed it records
// CheckoutFailed and the cart is reopened for a retry when the customer can
// reasonably try again (out of stock, payment declined or timed out, checkout
// timed out), closed when the order was rejected or cancelled by the orders
// side (fraud, operator: retrying the same cart would repeat it).
//
// Late success is reconciled, never leaked: a success event for a step the
// saga did not see complete, arriving while it compensates or after it
// failed, is recorded (CheckoutStepCompleted) and answered with a second
// compensation command under its own id (":void-payment-late", …), because
// the first one may have been refused while the step was still in flight
// (a void before the authorization resolved). Being recorded, a duplicate of
// that event is ignored.
//
// An authorization the provider left unanswered (PaymentAuthorizationTimedOut:
// maybe charged, the payment unknown, no void possible) is reconciled
// whenever the answer comes, also after the checkout turned back or failed:
// the saga asks the provider again under the same payment, at once and then
// with a back-off, until the charge shows as an approval (voided as a late
// success) or a decline, or the attempts run out (see paymentUnanswered).
//
// Once confirming, the saga does not turn back on its own deadline (stock
// may already be committed, the payment captured): a deadline then re-sends
// the outstanding confirmation commands under their ids and re-arms itself.
// Only an order cancelled by the orders side fails a confirming checkout.
//
// # Idempotency
//
// Every input is checked against the state: an event for a step already
// passed, a duplicate, a timer that is no longer relevant, decide nothing.
package domain

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	checkoutv1 "github.com/keel-commerce/keel/events/checkout/v1"
	"github.com/keel-commerce/keel/events/codec"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
)

// Errors of the checkout domain.
var (
	// ErrInvalid is an input the saga can never act on (no checkout id, no
	// lines): the caller dead-letters it.
	ErrInvalid = errors.New("invalid checkout input")
	// ErrUnknownInput is an input type the saga does not take.
	ErrUnknownInput = errors.New("unknown checkout input")
)

// Default timeouts.
const (
	DefaultPaymentTimeout  = 10 * time.Minute
	DefaultCheckoutTimeout = 15 * time.Minute
	// DefaultResolveBackoff is the wait before the second attempt to
	// reconcile an unanswered authorization; it doubles for each next one.
	DefaultResolveBackoff = time.Minute
	// DefaultResolveAttempts bounds the reconciliations of one payment
	// (with the default back-off the last is asked 31 minutes after the
	// first).
	DefaultResolveAttempts = 6
)

// Config holds the saga's timeouts. Zero fields take the defaults.
type Config struct {
	// PaymentTimeout bounds the wait for the payment's authorization.
	PaymentTimeout time.Duration
	// CheckoutTimeout bounds the whole checkout until it is confirming; it
	// is also the stock reservation's time to live, so a reservation never
	// outlives the checkout that asked for it.
	CheckoutTimeout time.Duration
	// ResolveBackoff and ResolveAttempts pace the reconciliation of an
	// authorization the provider did not answer (see the package comment).
	ResolveBackoff  time.Duration
	ResolveAttempts int
}

func (c Config) withDefaults() Config {
	if c.PaymentTimeout <= 0 {
		c.PaymentTimeout = DefaultPaymentTimeout
	}
	if c.CheckoutTimeout <= 0 {
		c.CheckoutTimeout = DefaultCheckoutTimeout
	}
	if c.ResolveBackoff <= 0 {
		c.ResolveBackoff = DefaultResolveBackoff
	}
	if c.ResolveAttempts <= 0 {
		c.ResolveAttempts = DefaultResolveAttempts
	}
	return c
}

// OrderID is the order id of a checkout (the orders service derives the
// same from the checkout id).
func OrderID(checkoutID string) string { return "order-" + checkoutID }

// PaymentID is the payment id of a checkout.
func PaymentID(checkoutID string) string { return "payment-" + checkoutID }

// CheckoutIDOfOrder returns the checkout of an order id made by OrderID.
func CheckoutIDOfOrder(orderID string) (string, bool) { return cut(orderID, "order-") }

// CheckoutIDOfPayment returns the checkout of a payment id made by PaymentID.
func CheckoutIDOfPayment(paymentID string) (string, bool) { return cut(paymentID, "payment-") }

func cut(s, prefix string) (string, bool) {
	id, ok := strings.CutPrefix(s, prefix)
	return id, ok && id != ""
}

// Status is where a checkout stands.
type Status int

// Statuses, in flow order.
const (
	StatusNew Status = iota
	StatusStarted
	StatusOrderPlaced
	StatusStockReserved
	StatusConfirming
	StatusCompleted
	StatusCompensating
	StatusFailed
)

var statusNames = [...]string{"new", "started", "order_placed", "stock_reserved", "confirming", "completed", "compensating", "failed"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// Terminal reports whether s is an end state.
func (s Status) Terminal() bool { return s == StatusCompleted || s == StatusFailed }

// TimerKind names one of a checkout's durable timers.
type TimerKind string

// Timer kinds.
const (
	TimerPayment  TimerKind = "payment"
	TimerCheckout TimerKind = "checkout"
	// TimerResolve asks the provider again about an unanswered
	// authorization; it outlives the checkout's end.
	TimerResolve TimerKind = "payment-resolve"
)

// Timer is a timer to (re)arm: one per kind per checkout.
type Timer struct {
	Kind TimerKind
	Due  time.Time
}

// TimerFired is the input of a due timer.
type TimerFired struct {
	Kind TimerKind
	Due  time.Time
}

// Decision is what one input decided: events to record, commands to send
// (proto command messages with deterministic command ids), timers to arm
// and to cancel. The zero value decides nothing.
type Decision struct {
	Events   []proto.Message
	Commands []proto.Message
	Arm      []Timer
	Cancel   []TimerKind
}

// Empty reports whether d decides nothing.
func (d Decision) Empty() bool {
	return len(d.Events) == 0 && len(d.Commands) == 0 && len(d.Arm) == 0 && len(d.Cancel) == 0
}

// Checkout is one checkout saga folded from its events. The zero value (or
// New) is a checkout not yet started. Not safe for concurrent use.
type Checkout struct {
	cfg Config

	id, cartID         string
	cartVersion        int64
	orderID, paymentID string
	started            *checkoutv1.CheckoutStarted
	status             Status
	done               map[checkoutv1.Step]time.Time
	refs               map[checkoutv1.Step]string
	undone             map[checkoutv1.Step]time.Time
	awaiting           []checkoutv1.Step // compensations awaited
	reason             checkoutv1.FailureReason
	detail             string
	timedOut           *checkoutv1.CheckoutTimedOut
	compensatingAt     time.Time
	endedAt            time.Time
	version            int64
	// Reconciliation of unanswered authorizations: the timed-out answers
	// already reconciled, the attempts made, when the latest was asked and
	// the next is due (zero: none), whether the saga gave up.
	resolvedAnswers []time.Time
	resolveAttempts int
	resolveLatestAt time.Time
	resolveNextAt   time.Time
	resolveGivenUp  bool
}

// New returns an empty checkout with cfg's timeouts.
func New(cfg Config) *Checkout {
	return &Checkout{cfg: cfg.withDefaults(), done: map[checkoutv1.Step]time.Time{},
		refs: map[checkoutv1.Step]string{}, undone: map[checkoutv1.Step]time.Time{}}
}

// ID is the checkout id ("" before it started).
func (c *Checkout) ID() string { return c.id }

// Status is where the checkout stands.
func (c *Checkout) Status() Status { return c.status }

// Version is the number of events applied.
func (c *Checkout) Version() int64 { return c.version }

// Apply folds one recorded event into the state. It is the only place the
// state changes; unknown types are ignored.
func (c *Checkout) Apply(ev proto.Message) {
	if c.done == nil {
		*c = *New(c.cfg)
	}
	c.version++
	switch e := ev.(type) {
	case *checkoutv1.CheckoutStarted:
		c.id, c.cartID, c.cartVersion = e.GetCheckoutId(), e.GetCartId(), e.GetCartVersion()
		c.orderID, c.paymentID = e.GetOrderId(), e.GetPaymentId()
		c.started = e
		c.status = StatusStarted
	case *checkoutv1.CheckoutStepCompleted:
		c.done[e.GetStep()] = e.GetCompletedAt().AsTime()
		if e.GetReference() != "" {
			c.refs[e.GetStep()] = e.GetReference()
		}
		switch {
		case c.status == StatusStarted && e.GetStep() == checkoutv1.Step_STEP_PLACE_ORDER:
			c.status = StatusOrderPlaced
		case c.status == StatusOrderPlaced && e.GetStep() == checkoutv1.Step_STEP_RESERVE_STOCK:
			c.status = StatusStockReserved
		case c.status == StatusStockReserved && e.GetStep() == checkoutv1.Step_STEP_AUTHORIZE_PAYMENT:
			c.status = StatusConfirming
		}
	case *checkoutv1.CheckoutCompleted:
		c.status = StatusCompleted
		c.endedAt = e.GetCompletedAt().AsTime()
	case *checkoutv1.CheckoutTimedOut:
		c.timedOut = e
	case *checkoutv1.CheckoutCompensating:
		c.status = StatusCompensating
		c.reason, c.detail = e.GetReason(), e.GetDetail()
		c.awaiting = e.GetStepsToCompensate()
		c.compensatingAt = e.GetStartedAt().AsTime()
	case *checkoutv1.CheckoutStepCompensated:
		c.undone[e.GetStep()] = e.GetCompensatedAt().AsTime()
	case *checkoutv1.CheckoutFailed:
		c.status = StatusFailed
		c.reason, c.detail = e.GetReason(), e.GetDetail()
		c.endedAt = e.GetFailedAt().AsTime()
	case *checkoutv1.CheckoutPaymentReconciling:
		c.resolvedAnswers = append(c.resolvedAnswers, e.GetAnsweredAt().AsTime())
		c.resolveAttempts = int(e.GetAttempt())
		c.resolveGivenUp = e.GetRetryAt() == nil
		// Attempt n is asked at its retry_at (the first at once, a later
		// one by its timer), and this event answers attempt n-1: so the
		// attempt that was next is now the latest one asked.
		if !c.resolveNextAt.IsZero() {
			c.resolveLatestAt = c.resolveNextAt
		}
		c.resolveNextAt = time.Time{}
		if r := e.GetRetryAt(); r != nil && e.GetAttempt() == 1 {
			c.resolveLatestAt = r.AsTime()
		} else if r != nil {
			c.resolveNextAt = r.AsTime()
		}
	}
}

// decider accumulates a decision, applying each event as it is raised so
// later steps of the same decision see it.
type decider struct {
	c *Checkout
	d Decision
}

func (x *decider) event(ev proto.Message) {
	x.c.Apply(ev)
	x.d.Events = append(x.d.Events, ev)
}

func (x *decider) command(cmd proto.Message) { x.d.Commands = append(x.d.Commands, cmd) }

// Handle decides what an input means for the checkout at now. Inputs are
// the other contexts' events (pointers to their generated messages) and
// TimerFired. The decided events are applied to c. An input the saga cannot
// act on returns an error wrapping ErrInvalid or ErrUnknownInput; an input
// that does not concern the current state returns an empty Decision.
func (c *Checkout) Handle(in any, now time.Time) (Decision, error) {
	if c.done == nil {
		*c = *New(c.cfg)
	}
	x := &decider{c: c}
	switch m := in.(type) {
	case *cartsv1.CheckoutRequested:
		if err := x.start(m, now); err != nil {
			return Decision{}, err
		}
	case *ordersv1.OrderPlaced:
		x.forward(checkoutv1.Step_STEP_PLACE_ORDER, StatusStarted, m.GetOrderId(), now)
	case *stockv1.OrderAllocated:
		ids := make([]string, 0, len(m.GetLines()))
		for _, l := range m.GetLines() {
			if id := l.GetReservationId(); id != "" && !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		x.forward(checkoutv1.Step_STEP_RESERVE_STOCK, StatusOrderPlaced, strings.Join(ids, ","), now)
	case *stockv1.StockReserved:
		// The stock service reserves an order's lines all or nothing in one
		// transaction and says so per line: the first line proves them all.
		// No ids kept: commit and release then act on all of the order's.
		x.forward(checkoutv1.Step_STEP_RESERVE_STOCK, StatusOrderPlaced, "", now)
	case *paymentsv1.PaymentAuthorized:
		x.forward(checkoutv1.Step_STEP_AUTHORIZE_PAYMENT, StatusStockReserved, m.GetProviderReference(), now)
	case *ordersv1.OrderConfirmed:
		x.confirmed(checkoutv1.Step_STEP_CONFIRM_ORDER, now)
	case *ordersv1.OrderPaid:
		x.confirmed(checkoutv1.Step_STEP_MARK_ORDER_PAID, now)
	case *stockv1.ReservationCommitted:
		x.confirmed(checkoutv1.Step_STEP_COMMIT_STOCK, now)
	case *paymentsv1.PaymentCaptured:
		x.confirmed(checkoutv1.Step_STEP_CAPTURE_PAYMENT, now)
	case *stockv1.AllocationFailed:
		if c.status == StatusOrderPlaced {
			// The stock service decides the saga's one ReserveStock once:
			// failed, it reserved nothing, so there is nothing to release.
			x.fail(checkoutv1.FailureReason_FAILURE_REASON_OUT_OF_STOCK, shortages(m), checkoutv1.Step_STEP_RESERVE_STOCK, now)
		}
	case *paymentsv1.PaymentDeclined:
		switch c.status {
		case StatusStockReserved:
			detail := codec.EnumName(m.GetReason())
			if m.GetDetail() != "" {
				detail += ": " + m.GetDetail()
			}
			x.fail(checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_DECLINED, detail, 0, now)
		case StatusCompensating, StatusFailed:
			if c.resolveArmed() {
				// A reconciliation found nothing held: stop asking.
				x.d.Cancel = append(x.d.Cancel, TimerResolve)
			}
		}
	case *paymentsv1.PaymentAuthorizationTimedOut:
		x.paymentUnanswered(m.GetTimedOutAt().AsTime(), now)
	case *ordersv1.OrderCancelled:
		x.undone(checkoutv1.Step_STEP_PLACE_ORDER, checkoutv1.FailureReason_FAILURE_REASON_ORDER_REJECTED,
			"order cancelled: "+codec.EnumName(m.GetReason()), now)
	case *stockv1.ReservationReleased:
		x.undone(checkoutv1.Step_STEP_RESERVE_STOCK, checkoutv1.FailureReason_FAILURE_REASON_TIMED_OUT,
			"reservation released: "+codec.EnumName(m.GetReason()), now)
	case *stockv1.ReservationExpired:
		x.undone(checkoutv1.Step_STEP_RESERVE_STOCK, checkoutv1.FailureReason_FAILURE_REASON_TIMED_OUT, "reservation expired", now)
	case *paymentsv1.PaymentVoided:
		x.undone(checkoutv1.Step_STEP_AUTHORIZE_PAYMENT, checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_DECLINED,
			"payment voided: "+m.GetReason(), now)
	case *paymentsv1.PaymentRefunded:
		x.undone(checkoutv1.Step_STEP_AUTHORIZE_PAYMENT, checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_DECLINED,
			"payment refunded: "+m.GetReason(), now)
	case TimerFired:
		x.timer(m, now)
	case *TimerFired:
		x.timer(*m, now)
	default:
		return Decision{}, fmt.Errorf("%w: %T", ErrUnknownInput, in)
	}
	return x.d, nil
}

func shortages(m *stockv1.AllocationFailed) string {
	var parts []string
	for _, s := range m.GetShortages() {
		parts = append(parts, fmt.Sprintf("%s requested %d available %d", s.GetSku(), s.GetRequested(), s.GetAvailable()))
	}
	return strings.Join(parts, "; ")
}

func (x *decider) start(m *cartsv1.CheckoutRequested, now time.Time) error {
	c := x.c
	if c.status != StatusNew {
		return nil // duplicate request: started once
	}
	id := m.GetCheckoutId()
	if id == "" || len(m.GetLines()) == 0 {
		return fmt.Errorf("%w: checkout request needs a checkout id and lines (checkout %q, %d lines)", ErrInvalid, id, len(m.GetLines()))
	}
	lines := make([]*checkoutv1.CheckoutLine, 0, len(m.GetLines()))
	for _, l := range m.GetLines() {
		lines = append(lines, &checkoutv1.CheckoutLine{Sku: l.GetSku(), Name: l.GetName(), Quantity: l.GetQuantity(),
			UnitPrice: l.GetUnitPrice(), LineTotal: l.GetLineTotal()})
	}
	deadline := now.Add(c.cfg.CheckoutTimeout)
	x.event(&checkoutv1.CheckoutStarted{CheckoutId: id, CartId: m.GetCartId(), CartVersion: m.GetCartVersion(),
		OrderId: OrderID(id), PaymentId: PaymentID(id), Lines: lines, Totals: m.GetTotals(), Customer: m.GetCustomer(),
		ShippingAddress: m.GetShippingAddress(), PaymentMethod: m.GetPaymentMethod(),
		Deadline: timestamppb.New(deadline), StartedAt: timestamppb.New(now)})
	x.command(c.placeOrder())
	x.d.Arm = append(x.d.Arm, Timer{Kind: TimerCheckout, Due: deadline})
	return nil
}

// forward handles the success of a forward step awaited in status want.
func (x *decider) forward(step checkoutv1.Step, want Status, ref string, now time.Time) {
	c := x.c
	if _, seen := c.done[step]; seen || c.status == StatusNew {
		return // duplicate, or not one of ours yet
	}
	switch {
	case c.status == want:
		x.event(&checkoutv1.CheckoutStepCompleted{CheckoutId: c.id, Step: step, Reference: ref, CompletedAt: timestamppb.New(now)})
		switch step {
		case checkoutv1.Step_STEP_PLACE_ORDER:
			x.command(c.reserveStock())
		case checkoutv1.Step_STEP_RESERVE_STOCK:
			x.command(c.authorizePayment())
			x.d.Arm = append(x.d.Arm, Timer{Kind: TimerPayment, Due: now.Add(c.cfg.PaymentTimeout)})
		case checkoutv1.Step_STEP_AUTHORIZE_PAYMENT:
			x.d.Cancel = append(x.d.Cancel, TimerPayment)
			x.command(&ordersv1.ConfirmOrder{CommandId: c.id + ":confirm-order", OrderId: c.orderID})
			x.command(&stockv1.CommitReservation{CommandId: c.id + ":commit-stock", OrderId: c.orderID, ReservationIds: c.reservationIDs()})
			x.command(c.capture())
		}
	case c.status == StatusCompensating || c.status == StatusFailed:
		// Late success after the saga turned back: record it and undo it
		// again under a late id (the first compensation may have been
		// refused while the step was in flight).
		x.event(&checkoutv1.CheckoutStepCompleted{CheckoutId: c.id, Step: step, Reference: ref, CompletedAt: timestamppb.New(now)})
		switch step {
		case checkoutv1.Step_STEP_PLACE_ORDER:
			x.command(c.cancelOrder(":cancel-order-late"))
		case checkoutv1.Step_STEP_RESERVE_STOCK:
			x.command(c.releaseStock(":release-stock-late"))
		case checkoutv1.Step_STEP_AUTHORIZE_PAYMENT:
			x.command(c.voidPayment(":void-payment-late"))
			if c.resolveArmed() {
				x.d.Cancel = append(x.d.Cancel, TimerResolve) // answered: nothing left to reconcile
			}
		}
	}
	// Otherwise an early event for a step whose command was never sent:
	// impossible in a well-behaved system; ignored.
}

// confirmed handles one of the confirmations: the order confirmed, the
// stock committed, the payment captured, the order paid.
func (x *decider) confirmed(step checkoutv1.Step, now time.Time) {
	c := x.c
	if _, seen := c.done[step]; seen {
		return
	}
	switch c.status {
	case StatusConfirming:
		if step == checkoutv1.Step_STEP_MARK_ORDER_PAID && !c.paymentSettled() {
			return // not asked for yet: impossible in a well-behaved system
		}
		x.event(&checkoutv1.CheckoutStepCompleted{CheckoutId: c.id, Step: step, CompletedAt: timestamppb.New(now)})
		if step == checkoutv1.Step_STEP_CONFIRM_ORDER || step == checkoutv1.Step_STEP_CAPTURE_PAYMENT {
			if c.paymentSettled() {
				x.command(c.markOrderPaid())
			}
			return
		}
		for _, s := range []checkoutv1.Step{checkoutv1.Step_STEP_MARK_ORDER_PAID, checkoutv1.Step_STEP_COMMIT_STOCK} {
			if _, ok := c.done[s]; !ok {
				return
			}
		}
		x.event(&checkoutv1.CheckoutCompleted{CheckoutId: c.id, OrderId: c.orderID, PaymentId: c.paymentID, CompletedAt: timestamppb.New(now)})
		x.command(&cartsv1.CloseCart{CommandId: c.id + ":close-cart", CartId: c.cartID, CheckoutId: c.id, OrderId: c.orderID})
		x.d.Cancel = append(x.d.Cancel, TimerPayment, TimerCheckout)
	case StatusCompensating, StatusFailed:
		switch step {
		case checkoutv1.Step_STEP_CAPTURE_PAYMENT:
			// Captured while (or after) turning back: a void cannot undo a
			// capture, a refund does.
			x.event(&checkoutv1.CheckoutStepCompleted{CheckoutId: c.id, Step: step, CompletedAt: timestamppb.New(now)})
			x.command(c.refund())
		case checkoutv1.Step_STEP_COMMIT_STOCK:
			// Committed before the release reached stock: nothing is left to
			// release (units that left stock come back by an operator's
			// adjustment), so waiting for a release would never end.
			x.event(&checkoutv1.CheckoutStepCompleted{CheckoutId: c.id, Step: step, CompletedAt: timestamppb.New(now)})
			if c.status == StatusCompensating && slices.Contains(c.awaiting, checkoutv1.Step_STEP_RESERVE_STOCK) {
				if _, ok := c.undone[checkoutv1.Step_STEP_RESERVE_STOCK]; !ok {
					x.event(&checkoutv1.CheckoutStepCompensated{CheckoutId: c.id, Step: checkoutv1.Step_STEP_RESERVE_STOCK, CompensatedAt: timestamppb.New(now)})
					x.maybeFailed(now)
				}
			}
		}
	}
}

// undone handles a compensation event: the confirmation of an awaited
// compensation, or, before confirming, a step undone under the saga's feet
// (a cancelled order, an expired reservation), which fails the checkout.
func (x *decider) undone(step checkoutv1.Step, reason checkoutv1.FailureReason, detail string, now time.Time) {
	c := x.c
	if _, ok := c.undone[step]; ok {
		return
	}
	switch c.status {
	case StatusCompensating:
		if !slices.Contains(c.awaiting, step) {
			return
		}
		x.event(&checkoutv1.CheckoutStepCompensated{CheckoutId: c.id, Step: step, CompensatedAt: timestamppb.New(now)})
		x.maybeFailed(now)
	case StatusStarted, StatusOrderPlaced, StatusStockReserved, StatusConfirming:
		if _, ok := c.done[step]; !ok {
			return // a compensation of a step we never saw done: not ours to act on
		}
		if c.status == StatusConfirming && step != checkoutv1.Step_STEP_PLACE_ORDER {
			return // a confirming checkout only turns back on a cancelled order
		}
		x.fail(reason, detail, step, now)
	}
}

// paymentUnanswered handles PaymentAuthorizationTimedOut: the provider did
// not answer an authorization, and may have charged without answering (the
// ambiguous case), which leaves the payment unknown: it cannot be voided
// until it is known. Asking again under the same payment (the provider's
// idempotency key) resolves it: a charge made is answered as an approval,
// which the saga then voids (a late success), or, while the checkout was
// waiting for the payment, the void already queued behind the question on
// the same topic and key releases it.
//
// Every such answer is reconciled, whenever it comes: while the saga waits
// for the payment it fails the checkout too; after the saga turned back (its
// payment timer fired first, the authorization was still in flight) or
// after it failed, it is the only way the charge is found. The first answer
// is asked again at once, the next ones after a back-off doubling from
// ResolveBackoff, up to ResolveAttempts, after which the payment is left
// unknown for an operator (recorded, shown in the view). Each answer is
// recorded once (CheckoutPaymentReconciling), so a redelivered one asks
// nothing again.
func (x *decider) paymentUnanswered(answeredAt time.Time, now time.Time) {
	c := x.c
	if slices.ContainsFunc(c.resolvedAnswers, answeredAt.Equal) {
		return // this answer is reconciled already
	}
	if _, authorized := c.done[checkoutv1.Step_STEP_AUTHORIZE_PAYMENT]; authorized {
		return // an approval came first: the payment is known
	}
	switch c.status {
	case StatusStockReserved:
		x.reconcile(answeredAt, now)
		x.fail(checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_TIMED_OUT, "payment provider did not answer", 0, now)
	case StatusCompensating, StatusFailed:
		x.reconcile(answeredAt, now)
	}
}

func (x *decider) reconcile(answeredAt, now time.Time) {
	c := x.c
	n := c.resolveAttempts + 1
	ev := &checkoutv1.CheckoutPaymentReconciling{CheckoutId: c.id, PaymentId: c.paymentID,
		AnsweredAt: timestamppb.New(answeredAt), Attempt: int32(n), RecordedAt: timestamppb.New(now)}
	if n > c.cfg.ResolveAttempts {
		x.event(ev) // given up: no retry_at
		return
	}
	retry := now
	if n > 1 {
		retry = now.Add(c.cfg.ResolveBackoff << (n - 2))
	}
	ev.RetryAt = timestamppb.New(retry)
	x.event(ev)
	if n == 1 {
		x.command(c.resolveAuthorization(n))
		return
	}
	x.d.Arm = append(x.d.Arm, Timer{Kind: TimerResolve, Due: retry})
}

func (x *decider) timer(t TimerFired, now time.Time) {
	c := x.c
	switch t.Kind {
	case TimerResolve:
		if !c.resolveArmed() {
			return
		}
		if _, authorized := c.done[checkoutv1.Step_STEP_AUTHORIZE_PAYMENT]; authorized {
			return
		}
		x.command(c.resolveAuthorization(c.resolveAttempts))
	case TimerPayment:
		if c.status != StatusStockReserved {
			return // stale: the payment was answered
		}
		x.event(&checkoutv1.CheckoutTimedOut{CheckoutId: c.id, AwaitedStep: checkoutv1.Step_STEP_AUTHORIZE_PAYMENT,
			Deadline: timestamppb.New(t.Due), TimedOutAt: timestamppb.New(now)})
		x.fail(checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_TIMED_OUT, "no payment answer before the payment deadline", 0, now)
	case TimerCheckout:
		switch c.status {
		case StatusStarted, StatusOrderPlaced, StatusStockReserved:
			x.event(&checkoutv1.CheckoutTimedOut{CheckoutId: c.id, AwaitedStep: c.awaitedStep(),
				Deadline: timestamppb.New(t.Due), TimedOutAt: timestamppb.New(now)})
			x.fail(checkoutv1.FailureReason_FAILURE_REASON_TIMED_OUT, "checkout deadline passed", 0, now)
		case StatusConfirming:
			// Past the point of no return: ask again (same ids), wait again.
			if _, ok := c.done[checkoutv1.Step_STEP_CONFIRM_ORDER]; !ok {
				x.command(&ordersv1.ConfirmOrder{CommandId: c.id + ":confirm-order", OrderId: c.orderID})
			}
			if _, ok := c.done[checkoutv1.Step_STEP_COMMIT_STOCK]; !ok {
				x.command(&stockv1.CommitReservation{CommandId: c.id + ":commit-stock", OrderId: c.orderID, ReservationIds: c.reservationIDs()})
			}
			if _, ok := c.done[checkoutv1.Step_STEP_CAPTURE_PAYMENT]; !ok {
				x.command(c.capture())
			}
			if _, ok := c.done[checkoutv1.Step_STEP_MARK_ORDER_PAID]; !ok && c.paymentSettled() {
				x.command(c.markOrderPaid())
			}
			x.d.Arm = append(x.d.Arm, Timer{Kind: TimerCheckout, Due: now.Add(c.cfg.CheckoutTimeout)})
		case StatusCompensating:
			// Compensations outstanding: ask again (same ids), wait again.
			for _, s := range c.awaiting {
				if _, ok := c.undone[s]; !ok {
					x.command(c.compensation(s))
				}
			}
			x.d.Arm = append(x.d.Arm, Timer{Kind: TimerCheckout, Due: now.Add(c.cfg.CheckoutTimeout)})
		}
	}
}

func (c *Checkout) awaitedStep() checkoutv1.Step {
	switch c.status {
	case StatusStarted:
		return checkoutv1.Step_STEP_PLACE_ORDER
	case StatusOrderPlaced:
		return checkoutv1.Step_STEP_RESERVE_STOCK
	case StatusStockReserved:
		return checkoutv1.Step_STEP_AUTHORIZE_PAYMENT
	}
	return checkoutv1.Step_STEP_UNSPECIFIED
}

// fail turns the checkout back. already is a step the cause itself undid
// (0 if none): it needs no compensation command and is recorded at once.
func (x *decider) fail(reason checkoutv1.FailureReason, detail string, already checkoutv1.Step, now time.Time) {
	c := x.c
	// Steps whose command was sent, latest first.
	var sent []checkoutv1.Step
	switch c.status {
	case StatusConfirming, StatusStockReserved:
		sent = []checkoutv1.Step{checkoutv1.Step_STEP_AUTHORIZE_PAYMENT, checkoutv1.Step_STEP_RESERVE_STOCK, checkoutv1.Step_STEP_PLACE_ORDER}
	case StatusOrderPlaced:
		sent = []checkoutv1.Step{checkoutv1.Step_STEP_RESERVE_STOCK, checkoutv1.Step_STEP_PLACE_ORDER}
	case StatusStarted:
		sent = []checkoutv1.Step{checkoutv1.Step_STEP_PLACE_ORDER}
	}
	var await []checkoutv1.Step
	for _, s := range sent {
		if _, ok := c.done[s]; ok {
			if s == checkoutv1.Step_STEP_RESERVE_STOCK {
				if _, committed := c.done[checkoutv1.Step_STEP_COMMIT_STOCK]; committed {
					continue // units left stock: nothing to release
				}
			}
			await = append(await, s)
		}
	}
	x.event(&checkoutv1.CheckoutCompensating{CheckoutId: c.id, Reason: reason, Detail: detail,
		StepsToCompensate: await, StartedAt: timestamppb.New(now)})
	if already != 0 && slices.Contains(await, already) {
		x.event(&checkoutv1.CheckoutStepCompensated{CheckoutId: c.id, Step: already, CompensatedAt: timestamppb.New(now)})
	}
	x.d.Cancel = append(x.d.Cancel, TimerPayment)
	for _, s := range sent {
		if s == already {
			continue
		}
		if _, committed := c.done[checkoutv1.Step_STEP_COMMIT_STOCK]; committed && s == checkoutv1.Step_STEP_RESERVE_STOCK {
			continue
		}
		x.command(c.compensation(s))
	}
	if !x.maybeFailed(now) {
		// Re-arm the deadline so outstanding compensations are asked again.
		x.d.Arm = append(x.d.Arm, Timer{Kind: TimerCheckout, Due: now.Add(c.cfg.CheckoutTimeout)})
	}
}

// maybeFailed ends a compensating checkout whose awaited compensations are
// all confirmed.
func (x *decider) maybeFailed(now time.Time) bool {
	c := x.c
	for _, s := range c.awaiting {
		if _, ok := c.undone[s]; !ok {
			return false
		}
	}
	x.event(&checkoutv1.CheckoutFailed{CheckoutId: c.id, Reason: c.reason, Detail: c.detail, FailedAt: timestamppb.New(now)})
	if Retryable(c.reason) {
		x.command(&cartsv1.ReopenCart{CommandId: c.id + ":reopen-cart", CartId: c.cartID, CheckoutId: c.id, Reason: codec.EnumName(c.reason)})
	} else {
		x.command(&cartsv1.CloseCart{CommandId: c.id + ":close-cart", CartId: c.cartID, CheckoutId: c.id, OrderId: c.orderID})
	}
	x.d.Cancel = append(x.d.Cancel, TimerPayment, TimerCheckout)
	return true
}

// Retryable reports whether a checkout failed for reason reopens its cart
// (the customer can try again) rather than closing it.
func Retryable(reason checkoutv1.FailureReason) bool {
	return reason != checkoutv1.FailureReason_FAILURE_REASON_ORDER_REJECTED
}

// compensation returns the command undoing step, under its first id.
func (c *Checkout) compensation(step checkoutv1.Step) proto.Message {
	switch step {
	case checkoutv1.Step_STEP_AUTHORIZE_PAYMENT:
		if _, captured := c.done[checkoutv1.Step_STEP_CAPTURE_PAYMENT]; captured {
			return c.refund()
		}
		return c.voidPayment(":void-payment")
	case checkoutv1.Step_STEP_RESERVE_STOCK:
		return c.releaseStock(":release-stock")
	default:
		return c.cancelOrder(":cancel-order")
	}
}

func (c *Checkout) placeOrder() *ordersv1.PlaceOrder {
	s := c.started
	lines := make([]*ordersv1.OrderLine, 0, len(s.GetLines()))
	for _, l := range s.GetLines() {
		lines = append(lines, &ordersv1.OrderLine{Sku: l.GetSku(), Name: l.GetName(), Quantity: l.GetQuantity(),
			UnitPrice: l.GetUnitPrice(), LineTotal: l.GetLineTotal()})
	}
	return &ordersv1.PlaceOrder{CommandId: c.id + ":place-order", OrderId: c.orderID, CheckoutId: c.id, CartId: c.cartID,
		Customer: s.GetCustomer(), Lines: lines, Totals: s.GetTotals(), ShippingAddress: s.GetShippingAddress()}
}

func (c *Checkout) reserveStock() *stockv1.ReserveStock {
	var lines []*stockv1.StockLine
	for _, l := range c.started.GetLines() {
		lines = append(lines, &stockv1.StockLine{Sku: l.GetSku(), Quantity: l.GetQuantity()})
	}
	return &stockv1.ReserveStock{CommandId: c.id + ":reserve-stock", OrderId: c.orderID, CheckoutId: c.id,
		Lines: lines, Ttl: durationpb.New(c.cfg.CheckoutTimeout)}
}

func (c *Checkout) authorizePayment() *paymentsv1.AuthorizePayment {
	return &paymentsv1.AuthorizePayment{CommandId: c.id + ":authorize-payment", IdempotencyKey: c.id,
		PaymentId: c.paymentID, OrderId: c.orderID, CheckoutId: c.id,
		Amount: c.started.GetTotals().GetTotal(), PaymentMethod: c.started.GetPaymentMethod()}
}

// resolveArmed reports whether a resolve timer was armed for the latest
// attempt (the first is asked at once, none after the saga gave up).
func (c *Checkout) resolveArmed() bool { return c.resolveAttempts > 1 && !c.resolveGivenUp }

// resolveAuthorization asks the provider again about a payment whose
// authorization timed out, for the attempt-th time; see paymentUnanswered.
func (c *Checkout) resolveAuthorization(attempt int) *paymentsv1.AuthorizePayment {
	a := c.authorizePayment()
	a.CommandId = c.id + ":authorize-payment-resolve"
	if attempt > 1 {
		a.CommandId += fmt.Sprintf("-%d", attempt)
	}
	return a
}

func (c *Checkout) capture() *paymentsv1.CapturePayment {
	return &paymentsv1.CapturePayment{CommandId: c.id + ":capture-payment", PaymentId: c.paymentID, Amount: c.started.GetTotals().GetTotal()}
}

// paymentSettled reports whether the order is confirmed and its payment
// captured: the orders service can then mark it paid.
func (c *Checkout) paymentSettled() bool {
	_, confirmed := c.done[checkoutv1.Step_STEP_CONFIRM_ORDER]
	_, captured := c.done[checkoutv1.Step_STEP_CAPTURE_PAYMENT]
	return confirmed && captured
}

func (c *Checkout) markOrderPaid() *ordersv1.MarkOrderPaid {
	return &ordersv1.MarkOrderPaid{CommandId: c.id + ":mark-order-paid", OrderId: c.orderID, PaymentId: c.paymentID,
		Amount: c.started.GetTotals().GetTotal()}
}

func (c *Checkout) refund() *paymentsv1.RefundPayment {
	return &paymentsv1.RefundPayment{CommandId: c.id + ":refund-payment", PaymentId: c.paymentID, RefundId: "refund-" + c.id,
		Amount: c.started.GetTotals().GetTotal(), Reason: codec.EnumName(c.reason)}
}

func (c *Checkout) voidPayment(suffix string) *paymentsv1.VoidPayment {
	return &paymentsv1.VoidPayment{CommandId: c.id + suffix, PaymentId: c.paymentID, Reason: codec.EnumName(c.reason)}
}

func (c *Checkout) releaseStock(suffix string) *stockv1.ReleaseReservation {
	return &stockv1.ReleaseReservation{CommandId: c.id + suffix, OrderId: c.orderID, ReservationIds: c.reservationIDs(),
		Reason: releaseReason(c.reason)}
}

func (c *Checkout) cancelOrder(suffix string) *ordersv1.CancelOrder {
	return &ordersv1.CancelOrder{CommandId: c.id + suffix, OrderId: c.orderID, Reason: cancelReason(c.reason), Detail: c.detail}
}

func (c *Checkout) reservationIDs() []string {
	ref := c.refs[checkoutv1.Step_STEP_RESERVE_STOCK]
	if ref == "" {
		return nil // all of the order's reservations
	}
	return strings.Split(ref, ",")
}

func releaseReason(r checkoutv1.FailureReason) stockv1.ReleaseReason {
	switch r {
	case checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_DECLINED, checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_TIMED_OUT:
		return stockv1.ReleaseReason_RELEASE_REASON_PAYMENT_FAILED
	case checkoutv1.FailureReason_FAILURE_REASON_TIMED_OUT:
		return stockv1.ReleaseReason_RELEASE_REASON_CHECKOUT_TIMED_OUT
	case checkoutv1.FailureReason_FAILURE_REASON_OUT_OF_STOCK:
		return stockv1.ReleaseReason_RELEASE_REASON_ALLOCATION_FAILED
	case checkoutv1.FailureReason_FAILURE_REASON_ORDER_REJECTED:
		return stockv1.ReleaseReason_RELEASE_REASON_ORDER_CANCELLED
	}
	return stockv1.ReleaseReason_RELEASE_REASON_CHECKOUT_FAILED
}

func cancelReason(r checkoutv1.FailureReason) ordersv1.CancelReason {
	switch r {
	case checkoutv1.FailureReason_FAILURE_REASON_OUT_OF_STOCK:
		return ordersv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK
	case checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_DECLINED, checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_TIMED_OUT:
		return ordersv1.CancelReason_CANCEL_REASON_PAYMENT_FAILED
	case checkoutv1.FailureReason_FAILURE_REASON_TIMED_OUT:
		return ordersv1.CancelReason_CANCEL_REASON_CHECKOUT_TIMED_OUT
	}
	return ordersv1.CancelReason_CANCEL_REASON_OPERATOR
}

// StepView is one step of a checkout as shown to people.
type StepView struct {
	Step          string     `json:"step"`
	Reference     string     `json:"reference,omitempty"`
	CompletedAt   *time.Time `json:"completed_at,omitempty"`
	CompensatedAt *time.Time `json:"compensated_at,omitempty"`
}

// View is a checkout as shown to people (GET /checkouts/{id}).
type View struct {
	CheckoutID     string     `json:"checkout_id"`
	CartID         string     `json:"cart_id"`
	OrderID        string     `json:"order_id"`
	PaymentID      string     `json:"payment_id"`
	Status         string     `json:"status"`
	StartedAt      time.Time  `json:"started_at"`
	Deadline       time.Time  `json:"deadline"`
	Steps          []StepView `json:"steps"`
	FailureReason  string     `json:"failure_reason,omitempty"`
	FailureDetail  string     `json:"failure_detail,omitempty"`
	TimedOut       bool       `json:"timed_out"`
	CompensatingAt *time.Time `json:"compensating_at,omitempty"`
	EndedAt        *time.Time `json:"ended_at,omitempty"`
	// PaymentReconciliation is set once the provider left an authorization
	// unanswered (see paymentUnanswered).
	PaymentReconciliation *ReconciliationView `json:"payment_reconciliation,omitempty"`
	Version               int64               `json:"version"`
}

// ReconciliationView shows the reconciliation of an unanswered
// authorization: attempts made (or due), when the latest was asked, when
// the next is due, whether the saga gave up (the payment needs an
// operator). The view is folded from events alone: a next attempt asked
// by its timer shows as next (its time past) until its answer comes.
type ReconciliationView struct {
	Attempts int        `json:"attempts"`
	LatestAt *time.Time `json:"latest_attempt_at,omitempty"`
	// NextAt is set while another attempt is scheduled.
	NextAt  *time.Time `json:"next_attempt_at,omitempty"`
	GivenUp bool       `json:"given_up"`
}

var viewSteps = []checkoutv1.Step{checkoutv1.Step_STEP_PLACE_ORDER, checkoutv1.Step_STEP_RESERVE_STOCK,
	checkoutv1.Step_STEP_AUTHORIZE_PAYMENT, checkoutv1.Step_STEP_CONFIRM_ORDER, checkoutv1.Step_STEP_COMMIT_STOCK,
	checkoutv1.Step_STEP_CAPTURE_PAYMENT, checkoutv1.Step_STEP_MARK_ORDER_PAID}

// View returns the checkout's view.
func (c *Checkout) View() View {
	v := View{CheckoutID: c.id, CartID: c.cartID, OrderID: c.orderID, PaymentID: c.paymentID, Status: c.status.String(),
		StartedAt: c.started.GetStartedAt().AsTime(), Deadline: c.started.GetDeadline().AsTime(),
		TimedOut: c.timedOut != nil, Version: c.version, Steps: []StepView{}}
	for _, s := range viewSteps {
		sv := StepView{Step: codec.EnumName(s), Reference: c.refs[s]}
		if t, ok := c.done[s]; ok {
			sv.CompletedAt = &t
		}
		if t, ok := c.undone[s]; ok {
			sv.CompensatedAt = &t
		}
		v.Steps = append(v.Steps, sv)
	}
	if c.reason != checkoutv1.FailureReason_FAILURE_REASON_UNSPECIFIED {
		v.FailureReason = codec.EnumName(c.reason)
		v.FailureDetail = c.detail
	}
	if !c.compensatingAt.IsZero() {
		t := c.compensatingAt
		v.CompensatingAt = &t
	}
	if !c.endedAt.IsZero() {
		t := c.endedAt
		v.EndedAt = &t
	}
	if c.resolveAttempts > 0 {
		latest := c.resolveLatestAt
		r := &ReconciliationView{Attempts: c.resolveAttempts, LatestAt: &latest, GivenUp: c.resolveGivenUp}
		if _, found := c.done[checkoutv1.Step_STEP_AUTHORIZE_PAYMENT]; !found && !c.resolveNextAt.IsZero() {
			next := c.resolveNextAt
			r.NextAt = &next
		}
		v.PaymentReconciliation = r
	}
	return v
}
