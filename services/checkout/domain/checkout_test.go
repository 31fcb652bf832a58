package domain_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	checkoutv1 "github.com/keel-commerce/keel/events/checkout/v1"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/checkout/domain"
)

const id = "co1"

var (
	t0  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	now = t0.Add(time.Minute)
	oid = domain.OrderID(id)
	pid = domain.PaymentID(id)
)

func eur(n int64) *typesv1.Money { return &typesv1.Money{AmountMinor: n, Currency: "EUR"} }

func req() *cartsv1.CheckoutRequested {
	return &cartsv1.CheckoutRequested{CartId: "cart1", CheckoutId: id, CartVersion: 7,
		Lines: []*cartsv1.CartLine{
			{Sku: "A", Name: "a", Quantity: 2, UnitPrice: eur(100), LineTotal: eur(200)},
			{Sku: "B", Name: "b", Quantity: 1, UnitPrice: eur(50), LineTotal: eur(50)},
		},
		Totals:        &typesv1.Totals{Subtotal: eur(250), Total: eur(250)},
		Customer:      &typesv1.Customer{CustomerId: "cu1", Email: "c@example.com"},
		PaymentMethod: &typesv1.PaymentMethod{Kind: typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_CARD, Token: "tok"},
		RequestedAt:   timestamppb.New(t0)}
}

func placed() *ordersv1.OrderPlaced { return &ordersv1.OrderPlaced{OrderId: oid, CheckoutId: id} }
func allocated() *stockv1.OrderAllocated {
	return &stockv1.OrderAllocated{OrderId: oid, CheckoutId: id, Lines: []*stockv1.AllocatedLine{
		{Sku: "A", WarehouseId: "w1", Quantity: 2, ReservationId: "r1"},
		{Sku: "B", WarehouseId: "w2", Quantity: 1, ReservationId: "r2"}}}
}
func allocFailed() *stockv1.AllocationFailed {
	return &stockv1.AllocationFailed{OrderId: oid, CheckoutId: id, Shortages: []*stockv1.Shortage{{Sku: "A", Requested: 2, Available: 1}}}
}
func authorized() *paymentsv1.PaymentAuthorized {
	return &paymentsv1.PaymentAuthorized{PaymentId: pid, OrderId: oid, CheckoutId: id, ProviderReference: "psp1"}
}
func declined() *paymentsv1.PaymentDeclined {
	return &paymentsv1.PaymentDeclined{PaymentId: pid, OrderId: oid, CheckoutId: id, Reason: paymentsv1.DeclineReason_DECLINE_REASON_INSUFFICIENT_FUNDS}
}
func payTimedOut() *paymentsv1.PaymentAuthorizationTimedOut { return payTimedOutAt(t0) }

// payTimedOutAt is the provider's silence recorded at at: answers to
// different attempts differ in it, a redelivered answer does not.
func payTimedOutAt(at time.Time) *paymentsv1.PaymentAuthorizationTimedOut {
	return &paymentsv1.PaymentAuthorizationTimedOut{PaymentId: pid, OrderId: oid, CheckoutId: id, TimedOutAt: timestamppb.New(at)}
}
func confirmed() *ordersv1.OrderConfirmed { return &ordersv1.OrderConfirmed{OrderId: oid} }
func committed() *stockv1.ReservationCommitted {
	return &stockv1.ReservationCommitted{ReservationId: "r1", OrderId: oid}
}
func captured() *paymentsv1.PaymentCaptured {
	return &paymentsv1.PaymentCaptured{PaymentId: pid, OrderId: oid}
}
func paid() *ordersv1.OrderPaid {
	return &ordersv1.OrderPaid{OrderId: oid, PaymentId: pid, Amount: eur(250)}
}
func cancelled() *ordersv1.OrderCancelled {
	return &ordersv1.OrderCancelled{OrderId: oid, Reason: ordersv1.CancelReason_CANCEL_REASON_FRAUD}
}
func released() *stockv1.ReservationReleased {
	return &stockv1.ReservationReleased{ReservationId: "r1", OrderId: oid}
}
func expired() *stockv1.ReservationExpired {
	return &stockv1.ReservationExpired{ReservationId: "r1", OrderId: oid}
}
func voided() *paymentsv1.PaymentVoided {
	return &paymentsv1.PaymentVoided{PaymentId: pid, OrderId: oid}
}
func refunded() *paymentsv1.PaymentRefunded {
	return &paymentsv1.PaymentRefunded{PaymentId: pid, OrderId: oid}
}
func paymentTimer() domain.TimerFired {
	return domain.TimerFired{Kind: domain.TimerPayment, Due: now.Add(domain.DefaultPaymentTimeout)}
}
func checkoutTimer() domain.TimerFired {
	return domain.TimerFired{Kind: domain.TimerCheckout, Due: now.Add(domain.DefaultCheckoutTimeout)}
}

// Common histories.
var (
	hStarted    = []any{req()}
	hPlaced     = []any{req(), placed()}
	hReserved   = []any{req(), placed(), allocated()}
	hConfirming = []any{req(), placed(), allocated(), authorized()}
)

func with(h []any, more ...any) []any { return append(append([]any{}, h...), more...) }

func short(m proto.Message) string { return string(m.ProtoReflect().Descriptor().Name()) }

func stepName(s checkoutv1.Step) string { return strings.TrimPrefix(s.String(), "STEP_") }

func reasonName(r checkoutv1.FailureReason) string {
	return strings.TrimPrefix(r.String(), "FAILURE_REASON_")
}

// eventSummary names an event with the facts a test pins.
func eventSummary(m proto.Message) string {
	switch e := m.(type) {
	case *checkoutv1.CheckoutStepCompleted:
		return "StepCompleted " + stepName(e.GetStep())
	case *checkoutv1.CheckoutStepCompensated:
		return "StepCompensated " + stepName(e.GetStep())
	case *checkoutv1.CheckoutCompensating:
		var s []string
		for _, st := range e.GetStepsToCompensate() {
			s = append(s, stepName(st))
		}
		return fmt.Sprintf("Compensating %s [%s]", reasonName(e.GetReason()), strings.Join(s, " "))
	case *checkoutv1.CheckoutFailed:
		return "Failed " + reasonName(e.GetReason())
	case *checkoutv1.CheckoutTimedOut:
		return "TimedOut " + stepName(e.GetAwaitedStep())
	case *checkoutv1.CheckoutPaymentReconciling:
		return fmt.Sprintf("PaymentReconciling #%d", e.GetAttempt())
	}
	return strings.TrimPrefix(short(m), "Checkout")
}

// commandSummary is a command's type and id.
func commandSummary(m proto.Message) string {
	f := m.ProtoReflect().Descriptor().Fields().ByName("command_id")
	return short(m) + " " + m.ProtoReflect().Get(f).String()
}

func summaries(ms []proto.Message, f func(proto.Message) string) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, f(m))
	}
	return out
}

// build runs the history through a fresh checkout, returning it and every
// event it recorded.
func build(t *testing.T, h []any) (*domain.Checkout, []proto.Message) {
	t.Helper()
	c := domain.New(domain.Config{})
	var evs []proto.Message
	for i, in := range h {
		d, err := c.Handle(in, now)
		if err != nil {
			t.Fatalf("history[%d] %T: %v", i, in, err)
		}
		evs = append(evs, d.Events...)
	}
	return c, evs
}

func TestHandle(t *testing.T) {
	tests := []struct {
		name     string
		given    []any
		in       any
		events   []string
		commands []string
		status   domain.Status
	}{
		// Forward steps.
		{name: "request starts and places the order", in: req(),
			events: []string{"Started"}, commands: []string{"PlaceOrder co1:place-order"}, status: domain.StatusStarted},
		{name: "order placed reserves stock", given: hStarted, in: placed(),
			events: []string{"StepCompleted PLACE_ORDER"}, commands: []string{"ReserveStock co1:reserve-stock"}, status: domain.StatusOrderPlaced},
		{name: "stock reserved authorizes payment", given: hPlaced, in: allocated(),
			events: []string{"StepCompleted RESERVE_STOCK"}, commands: []string{"AuthorizePayment co1:authorize-payment"}, status: domain.StatusStockReserved},
		{name: "the first reserved line of the order reserves the stock", given: hPlaced,
			in:     &stockv1.StockReserved{ReservationId: "r9", Sku: "B", OrderId: oid, CheckoutId: id},
			events: []string{"StepCompleted RESERVE_STOCK"}, commands: []string{"AuthorizePayment co1:authorize-payment"}, status: domain.StatusStockReserved},
		{name: "the other reserved lines are duplicates", given: with(hPlaced, &stockv1.StockReserved{Sku: "B", OrderId: oid, CheckoutId: id}),
			in: &stockv1.StockReserved{Sku: "A", OrderId: oid, CheckoutId: id}, status: domain.StatusStockReserved},
		{name: "payment authorized confirms, commits, captures", given: hReserved, in: authorized(),
			events:   []string{"StepCompleted AUTHORIZE_PAYMENT"},
			commands: []string{"ConfirmOrder co1:confirm-order", "CommitReservation co1:commit-stock", "CapturePayment co1:capture-payment"},
			status:   domain.StatusConfirming},
		{name: "order confirmed first", given: hConfirming, in: confirmed(),
			events: []string{"StepCompleted CONFIRM_ORDER"}, status: domain.StatusConfirming},
		{name: "capture after the order confirmed marks the order paid", given: with(hConfirming, confirmed()), in: captured(),
			events: []string{"StepCompleted CAPTURE_PAYMENT"}, commands: []string{"MarkOrderPaid co1:mark-order-paid"}, status: domain.StatusConfirming},
		{name: "order confirmed after the capture marks it paid", given: with(hConfirming, captured(), committed()), in: confirmed(),
			events: []string{"StepCompleted CONFIRM_ORDER"}, commands: []string{"MarkOrderPaid co1:mark-order-paid"}, status: domain.StatusConfirming},
		{name: "captured but not confirmed does not complete", given: with(hConfirming, committed()), in: captured(),
			events: []string{"StepCompleted CAPTURE_PAYMENT"}, status: domain.StatusConfirming},
		{name: "confirmed, committed and captured is not complete until the order is paid", given: with(hConfirming, confirmed(), captured()), in: committed(),
			events: []string{"StepCompleted COMMIT_STOCK"}, status: domain.StatusConfirming},
		{name: "order paid last completes and closes the cart", given: with(hConfirming, confirmed(), captured(), committed()), in: paid(),
			events: []string{"StepCompleted MARK_ORDER_PAID", "Completed"}, commands: []string{"CloseCart co1:close-cart"}, status: domain.StatusCompleted},
		{name: "stock committed last completes and closes the cart", given: with(hConfirming, confirmed(), captured(), paid()), in: committed(),
			events: []string{"StepCompleted COMMIT_STOCK", "Completed"}, commands: []string{"CloseCart co1:close-cart"}, status: domain.StatusCompleted},
		{name: "order paid before the saga asked is ignored", given: with(hConfirming, confirmed()), in: paid(), status: domain.StatusConfirming},

		// Failures and compensation.
		{name: "out of stock cancels the order at once, nothing to release", given: hPlaced, in: allocFailed(),
			events:   []string{"Compensating OUT_OF_STOCK [PLACE_ORDER]"},
			commands: []string{"CancelOrder co1:cancel-order"}, status: domain.StatusCompensating},
		{name: "order cancelled ends an out-of-stock checkout, cart reopened", given: with(hPlaced, allocFailed()), in: cancelled(),
			events: []string{"StepCompensated PLACE_ORDER", "Failed OUT_OF_STOCK"}, commands: []string{"ReopenCart co1:reopen-cart"}, status: domain.StatusFailed},
		{name: "decline releases stock and cancels the order", given: hReserved, in: declined(),
			events:   []string{"Compensating PAYMENT_DECLINED [RESERVE_STOCK PLACE_ORDER]"},
			commands: []string{"VoidPayment co1:void-payment", "ReleaseReservation co1:release-stock", "CancelOrder co1:cancel-order"},
			status:   domain.StatusCompensating},
		{name: "compensations confirmed in any order end it", given: with(hReserved, declined(), cancelled()), in: released(),
			events: []string{"StepCompensated RESERVE_STOCK", "Failed PAYMENT_DECLINED"}, commands: []string{"ReopenCart co1:reopen-cart"}, status: domain.StatusFailed},
		{name: "an expired reservation counts as released while compensating", given: with(hReserved, declined(), cancelled()), in: expired(),
			events: []string{"StepCompensated RESERVE_STOCK", "Failed PAYMENT_DECLINED"}, commands: []string{"ReopenCart co1:reopen-cart"}, status: domain.StatusFailed},
		{name: "provider timeout resolves the payment, then compensates", given: hReserved, in: payTimedOut(),
			events: []string{"PaymentReconciling #1", "Compensating PAYMENT_TIMED_OUT [RESERVE_STOCK PLACE_ORDER]"},
			commands: []string{"AuthorizePayment co1:authorize-payment-resolve", "VoidPayment co1:void-payment",
				"ReleaseReservation co1:release-stock", "CancelOrder co1:cancel-order"},
			status: domain.StatusCompensating},
		{name: "a duplicate provider timeout resolves once", given: with(hReserved, payTimedOut()), in: payTimedOut(),
			status: domain.StatusCompensating},
		{name: "a provider timeout after the payment timer fired is reconciled", given: with(hReserved, paymentTimer()), in: payTimedOut(),
			events: []string{"PaymentReconciling #1"}, commands: []string{"AuthorizePayment co1:authorize-payment-resolve"}, status: domain.StatusCompensating},
		{name: "a provider timeout after the checkout failed is reconciled", given: with(hReserved, paymentTimer(), released(), cancelled()), in: payTimedOut(),
			events: []string{"PaymentReconciling #1"}, commands: []string{"AuthorizePayment co1:authorize-payment-resolve"}, status: domain.StatusFailed},
		{name: "a duplicate provider timeout after the checkout failed resolves once", given: with(hReserved, paymentTimer(), released(), cancelled(), payTimedOut()),
			in: payTimedOut(), status: domain.StatusFailed},
		{name: "a second provider timeout waits for the back-off", given: with(hReserved, payTimedOut()), in: payTimedOutAt(t0.Add(time.Second)),
			events: []string{"PaymentReconciling #2"}, status: domain.StatusCompensating},
		{name: "a provider timeout after an approval is stale", given: hConfirming, in: payTimedOut(), status: domain.StatusConfirming},
		{name: "order cancelled by the orders side while reserving", given: hPlaced, in: cancelled(),
			events:   []string{"Compensating ORDER_REJECTED [PLACE_ORDER]", "StepCompensated PLACE_ORDER", "Failed ORDER_REJECTED"},
			commands: []string{"ReleaseReservation co1:release-stock", "CloseCart co1:close-cart"}, status: domain.StatusFailed},
		{name: "reservation expired while authorizing", given: hReserved, in: expired(),
			events:   []string{"Compensating TIMED_OUT [RESERVE_STOCK PLACE_ORDER]", "StepCompensated RESERVE_STOCK"},
			commands: []string{"VoidPayment co1:void-payment", "CancelOrder co1:cancel-order"}, status: domain.StatusCompensating},
		{name: "order cancelled while confirming voids and releases", given: hConfirming, in: cancelled(),
			events:   []string{"Compensating ORDER_REJECTED [AUTHORIZE_PAYMENT RESERVE_STOCK PLACE_ORDER]", "StepCompensated PLACE_ORDER"},
			commands: []string{"VoidPayment co1:void-payment", "ReleaseReservation co1:release-stock"}, status: domain.StatusCompensating},
		{name: "order cancelled after capture and commit refunds, nothing to release", given: with(hConfirming, captured(), committed()), in: cancelled(),
			events:   []string{"Compensating ORDER_REJECTED [AUTHORIZE_PAYMENT PLACE_ORDER]", "StepCompensated PLACE_ORDER"},
			commands: []string{"RefundPayment co1:refund-payment"}, status: domain.StatusCompensating},
		{name: "refund confirms the payment's compensation", given: with(hConfirming, captured(), committed(), cancelled()), in: refunded(),
			events: []string{"StepCompensated AUTHORIZE_PAYMENT", "Failed ORDER_REJECTED"}, commands: []string{"CloseCart co1:close-cart"}, status: domain.StatusFailed},
		{name: "capture landing after a void was sent is refunded", given: with(hConfirming, cancelled()), in: captured(),
			events: []string{"StepCompleted CAPTURE_PAYMENT"}, commands: []string{"RefundPayment co1:refund-payment"}, status: domain.StatusCompensating},
		{name: "a commit landing before the release ends the stock's compensation", given: with(hConfirming, cancelled(), voided()), in: committed(),
			events:   []string{"StepCompleted COMMIT_STOCK", "StepCompensated RESERVE_STOCK", "Failed ORDER_REJECTED"},
			commands: []string{"CloseCart co1:close-cart"}, status: domain.StatusFailed},
		{name: "a confirming checkout does not turn back on a released reservation", given: hConfirming, in: released(), status: domain.StatusConfirming},

		// Timeouts.
		{name: "payment timer compensates", given: hReserved, in: paymentTimer(),
			events:   []string{"TimedOut AUTHORIZE_PAYMENT", "Compensating PAYMENT_TIMED_OUT [RESERVE_STOCK PLACE_ORDER]"},
			commands: []string{"VoidPayment co1:void-payment", "ReleaseReservation co1:release-stock", "CancelOrder co1:cancel-order"},
			status:   domain.StatusCompensating},
		{name: "checkout deadline before the order was placed ends at once", given: hStarted, in: checkoutTimer(),
			events:   []string{"TimedOut PLACE_ORDER", "Compensating TIMED_OUT []", "Failed TIMED_OUT"},
			commands: []string{"CancelOrder co1:cancel-order", "ReopenCart co1:reopen-cart"}, status: domain.StatusFailed},
		{name: "checkout deadline while reserving", given: hPlaced, in: checkoutTimer(),
			events:   []string{"TimedOut RESERVE_STOCK", "Compensating TIMED_OUT [PLACE_ORDER]"},
			commands: []string{"ReleaseReservation co1:release-stock", "CancelOrder co1:cancel-order"}, status: domain.StatusCompensating},
		{name: "checkout deadline while confirming asks again, no turning back", given: with(hConfirming, captured()), in: checkoutTimer(),
			commands: []string{"ConfirmOrder co1:confirm-order", "CommitReservation co1:commit-stock"}, status: domain.StatusConfirming},
		{name: "checkout deadline with the order unpaid asks again to mark it paid", given: with(hConfirming, confirmed(), captured(), committed()), in: checkoutTimer(),
			commands: []string{"MarkOrderPaid co1:mark-order-paid"}, status: domain.StatusConfirming},
		{name: "checkout deadline while compensating asks the outstanding compensations again", given: with(hReserved, declined(), cancelled()), in: checkoutTimer(),
			commands: []string{"ReleaseReservation co1:release-stock"}, status: domain.StatusCompensating},
		{name: "stale payment timer after authorization", given: hConfirming, in: paymentTimer(), status: domain.StatusConfirming},
		{name: "timers after completion do nothing", given: with(hConfirming, confirmed(), committed(), captured(), paid()), in: checkoutTimer(), status: domain.StatusCompleted},
		{name: "timers after failure do nothing", given: with(hPlaced, allocFailed(), cancelled()), in: checkoutTimer(), status: domain.StatusFailed},

		// Late success after the saga turned back.
		{name: "late authorization after a payment timeout is voided", given: with(hReserved, paymentTimer()), in: authorized(),
			events: []string{"StepCompleted AUTHORIZE_PAYMENT"}, commands: []string{"VoidPayment co1:void-payment-late"}, status: domain.StatusCompensating},
		{name: "late authorization after the checkout failed is voided", given: with(hReserved, payTimedOut(), released(), cancelled()), in: authorized(),
			events: []string{"StepCompleted AUTHORIZE_PAYMENT"}, commands: []string{"VoidPayment co1:void-payment-late"}, status: domain.StatusFailed},
		{name: "a duplicate late authorization voids once", given: with(hReserved, payTimedOut(), released(), cancelled(), authorized()), in: authorized(),
			status: domain.StatusFailed},
		{name: "late allocation after the deadline is released", given: with(hPlaced, checkoutTimer(), cancelled()), in: allocated(),
			events: []string{"StepCompleted RESERVE_STOCK"}, commands: []string{"ReleaseReservation co1:release-stock-late"}, status: domain.StatusFailed},
		{name: "late order placed after the deadline is cancelled", given: with(hStarted, checkoutTimer()), in: placed(),
			events: []string{"StepCompleted PLACE_ORDER"}, commands: []string{"CancelOrder co1:cancel-order-late"}, status: domain.StatusFailed},

		// Duplicates and reorders.
		{name: "duplicate request", given: hStarted, in: req(), status: domain.StatusStarted},
		{name: "duplicate order placed", given: hPlaced, in: placed(), status: domain.StatusOrderPlaced},
		{name: "duplicate allocation", given: hReserved, in: allocated(), status: domain.StatusStockReserved},
		{name: "duplicate authorization", given: hConfirming, in: authorized(), status: domain.StatusConfirming},
		{name: "duplicate confirmation", given: with(hConfirming, confirmed()), in: confirmed(), status: domain.StatusConfirming},
		{name: "duplicate last confirmation after completion", given: with(hConfirming, confirmed(), committed(), captured(), paid()), in: paid(), status: domain.StatusCompleted},
		{name: "duplicate capture after completion", given: with(hConfirming, confirmed(), committed(), captured(), paid()), in: captured(), status: domain.StatusCompleted},
		{name: "old order placed redelivered after authorization", given: hConfirming, in: placed(), status: domain.StatusConfirming},
		{name: "decline after authorization is ignored", given: hConfirming, in: declined(), status: domain.StatusConfirming},
		{name: "duplicate compensation event", given: with(hReserved, declined(), cancelled()), in: cancelled(), status: domain.StatusCompensating},
		{name: "duplicate failure cause", given: with(hReserved, declined()), in: declined(), status: domain.StatusCompensating},
		{name: "allocation failure after allocation is ignored", given: hReserved, in: allocFailed(), status: domain.StatusStockReserved},
		{name: "duplicate allocation failure", given: with(hPlaced, allocFailed()), in: allocFailed(), status: domain.StatusCompensating},
		{name: "allocation failure after the deadline turned back is ignored", given: with(hPlaced, checkoutTimer()), in: allocFailed(),
			status: domain.StatusCompensating},
		{name: "event before the checkout started is ignored", in: placed(), status: domain.StatusNew},
		{name: "authorization before the stock step is ignored", given: hPlaced, in: authorized(), status: domain.StatusOrderPlaced},
		{name: "confirmation before confirming is ignored", given: hReserved, in: captured(), status: domain.StatusStockReserved},
		{name: "compensation event of a step never done is ignored", given: hStarted, in: released(), status: domain.StatusStarted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, history := build(t, tt.given)
			d, err := c.Handle(tt.in, now)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(orEmpty(tt.events), summaries(d.Events, eventSummary)); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(orEmpty(tt.commands), summaries(d.Commands, commandSummary)); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
			if c.Status() != tt.status {
				t.Errorf("status %s, want %s", c.Status(), tt.status)
			}
			// The same state folded from the recorded events decides the same.
			r := domain.New(domain.Config{})
			for _, ev := range history {
				r.Apply(ev)
			}
			d2, err := r.Handle(tt.in, now)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(d, d2, protocmp.Transform()); diff != "" {
				t.Errorf("replayed state decides differently (-live +replayed):\n%s", diff)
			}
		})
	}
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func TestCommandsCarryTheCheckout(t *testing.T) {
	c, _ := build(t, hStarted)
	d, _ := domain.New(domain.Config{}).Handle(req(), now)
	want := &ordersv1.PlaceOrder{CommandId: "co1:place-order", OrderId: oid, CheckoutId: id, CartId: "cart1",
		Customer: req().GetCustomer(), Totals: req().GetTotals(), Lines: []*ordersv1.OrderLine{
			{Sku: "A", Name: "a", Quantity: 2, UnitPrice: eur(100), LineTotal: eur(200)},
			{Sku: "B", Name: "b", Quantity: 1, UnitPrice: eur(50), LineTotal: eur(50)}}}
	if diff := cmp.Diff(want, d.Commands[0], protocmp.Transform()); diff != "" {
		t.Errorf("PlaceOrder (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]domain.Timer{{Kind: domain.TimerCheckout, Due: now.Add(domain.DefaultCheckoutTimeout)}}, d.Arm); diff != "" {
		t.Errorf("timers (-want +got):\n%s", diff)
	}
	d, _ = c.Handle(placed(), now)
	wantRes := &stockv1.ReserveStock{CommandId: "co1:reserve-stock", OrderId: oid, CheckoutId: id,
		Lines: []*stockv1.StockLine{{Sku: "A", Quantity: 2}, {Sku: "B", Quantity: 1}}, Ttl: durationpb.New(domain.DefaultCheckoutTimeout)}
	if diff := cmp.Diff(wantRes, d.Commands[0], protocmp.Transform()); diff != "" {
		t.Errorf("ReserveStock (-want +got):\n%s", diff)
	}
	d, _ = c.Handle(allocated(), now)
	wantAuth := &paymentsv1.AuthorizePayment{CommandId: "co1:authorize-payment", IdempotencyKey: id, PaymentId: pid, OrderId: oid,
		CheckoutId: id, Amount: eur(250), PaymentMethod: req().GetPaymentMethod()}
	if diff := cmp.Diff(wantAuth, d.Commands[0], protocmp.Transform()); diff != "" {
		t.Errorf("AuthorizePayment (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]domain.Timer{{Kind: domain.TimerPayment, Due: now.Add(domain.DefaultPaymentTimeout)}}, d.Arm); diff != "" {
		t.Errorf("timers (-want +got):\n%s", diff)
	}
	d, _ = c.Handle(authorized(), now)
	wantCommit := &stockv1.CommitReservation{CommandId: "co1:commit-stock", OrderId: oid, ReservationIds: []string{"r1", "r2"}}
	if diff := cmp.Diff(wantCommit, d.Commands[1], protocmp.Transform()); diff != "" {
		t.Errorf("CommitReservation (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]domain.TimerKind{domain.TimerPayment}, d.Cancel); diff != "" {
		t.Errorf("cancelled timers (-want +got):\n%s", diff)
	}
}

func TestLineReservationsCommitAllOfTheOrder(t *testing.T) {
	c, _ := build(t, with(hPlaced, &stockv1.StockReserved{ReservationId: "r9", Sku: "B", OrderId: oid, CheckoutId: id}))
	d, _ := c.Handle(authorized(), now)
	want := &stockv1.CommitReservation{CommandId: "co1:commit-stock", OrderId: oid}
	if diff := cmp.Diff(want, d.Commands[1], protocmp.Transform()); diff != "" {
		t.Errorf("CommitReservation (-want +got):\n%s", diff)
	}
}

func TestInvalidInput(t *testing.T) {
	r := req()
	r.Lines = nil
	if _, err := domain.New(domain.Config{}).Handle(r, now); !errors.Is(err, domain.ErrInvalid) {
		t.Errorf("no lines: err %v, want ErrInvalid", err)
	}
	if _, err := domain.New(domain.Config{}).Handle(&ordersv1.ShipOrder{}, now); !errors.Is(err, domain.ErrUnknownInput) {
		t.Errorf("unknown input: err %v, want ErrUnknownInput", err)
	}
}

// Every interleaving of the three confirmations, each delivered twice,
// asks exactly once to mark the order paid; the order paid (twice too)
// then completes exactly once with exactly one CloseCart.
func TestConfirmationsAnyOrderTwice(t *testing.T) {
	ins := []func() any{func() any { return confirmed() }, func() any { return committed() }, func() any { return captured() }}
	perms := [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}
	for _, p := range perms {
		c, _ := build(t, hConfirming)
		completed, closes, markPaid := 0, 0, 0
		for _, in := range []any{ins[p[0]](), ins[p[0]](), ins[p[1]](), ins[p[2]](), ins[p[1]](), ins[p[2]](), paid(), paid()} {
			d, err := c.Handle(in, now)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range d.Events {
				if _, ok := e.(*checkoutv1.CheckoutCompleted); ok {
					completed++
				}
			}
			for _, cmd := range d.Commands {
				switch cmd.(type) {
				case *cartsv1.CloseCart:
					closes++
				case *ordersv1.MarkOrderPaid:
					markPaid++
				}
			}
		}
		if completed != 1 || closes != 1 || markPaid != 1 || c.Status() != domain.StatusCompleted {
			t.Errorf("order %v: completed %d, close %d, mark paid %d, status %s", p, completed, closes, markPaid, c.Status())
		}
	}
}

// The order is marked paid with the payment and the amount captured, under
// a command id derived from the checkout (a replay sends the same).
func TestMarkOrderPaidCommand(t *testing.T) {
	c, _ := build(t, with(hConfirming, confirmed()))
	d, err := c.Handle(captured(), now)
	if err != nil {
		t.Fatal(err)
	}
	want := []proto.Message{&ordersv1.MarkOrderPaid{CommandId: "co1:mark-order-paid", OrderId: oid, PaymentId: pid, Amount: eur(250)}}
	if diff := cmp.Diff(want, d.Commands, protocmp.Transform()); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
}

func TestView(t *testing.T) {
	c, _ := build(t, with(hReserved, declined(), cancelled(), released()))
	v := c.View()
	if v.Status != "failed" || v.FailureReason != "payment_declined" || v.EndedAt == nil || v.CompensatingAt == nil {
		t.Errorf("view %+v", v)
	}
	if v.Steps[0].CompletedAt == nil || v.Steps[0].CompensatedAt == nil || v.Steps[2].CompletedAt != nil {
		t.Errorf("steps %+v", v.Steps)
	}
	if v.Steps[1].Reference != "r1,r2" {
		t.Errorf("reserve reference %q", v.Steps[1].Reference)
	}
}

// TestOutOfStockCompensatesAtOnce: AllocationFailed cancels the order as out
// of stock, names the short lines, and ends with the cart reopened once the
// cancellation is confirmed; no timer has to fire.
func TestOutOfStockCompensatesAtOnce(t *testing.T) {
	c, _ := build(t, hPlaced)
	d, err := c.Handle(allocFailed(), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Commands) != 1 {
		t.Fatalf("commands %v, want one CancelOrder", d.Commands)
	}
	cancel, ok := d.Commands[0].(*ordersv1.CancelOrder)
	if !ok || cancel.GetReason() != ordersv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK || cancel.GetDetail() != "A requested 2 available 1" {
		t.Fatalf("command %v, want CancelOrder as out of stock naming the short line", d.Commands[0])
	}
	d, err = c.Handle(cancelled(), now)
	if err != nil {
		t.Fatal(err)
	}
	reopen, ok := d.Commands[0].(*cartsv1.ReopenCart)
	if c.Status() != domain.StatusFailed || !ok || reopen.GetReason() != "out_of_stock" {
		t.Fatalf("status %s, commands %v: want failed and the cart reopened as out of stock", c.Status(), d.Commands)
	}
	if !slices.Contains(d.Cancel, domain.TimerCheckout) || !slices.Contains(d.Cancel, domain.TimerPayment) {
		t.Errorf("timers cancelled %v, want both", d.Cancel)
	}
	if v := c.View(); v.FailureReason != "out_of_stock" || v.FailureDetail != "A requested 2 available 1" {
		t.Errorf("view reason %q detail %q", v.FailureReason, v.FailureDetail)
	}
}

// TestUnansweredPaymentReconciled walks an authorization the provider never
// answers: asked again at once, then after a doubling back-off on the
// injected clock, each answer once, until the attempts are used up and the
// view says an operator is needed; and an approval found on the way is
// voided and stops the asking.
func TestUnansweredPaymentReconciled(t *testing.T) {
	cfg := domain.Config{ResolveBackoff: time.Minute, ResolveAttempts: 4}
	start := func(t *testing.T) (*domain.Checkout, time.Time) {
		c := domain.New(cfg)
		clock := now
		for _, in := range with(hReserved, paymentTimer(), released(), cancelled()) {
			if _, err := c.Handle(in, clock); err != nil {
				t.Fatal(err)
			}
		}
		if c.Status() != domain.StatusFailed {
			t.Fatalf("status %s, want failed", c.Status())
		}
		return c, clock
	}
	handle := func(t *testing.T, c *domain.Checkout, in any, at time.Time) domain.Decision {
		t.Helper()
		d, err := c.Handle(in, at)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	t.Run("attempts back off, then give up", func(t *testing.T) {
		c, clock := start(t)
		d := handle(t, c, payTimedOutAt(clock), clock)
		if got := summaries(d.Commands, commandSummary); !slices.Equal(got, []string{"AuthorizePayment co1:authorize-payment-resolve"}) || len(d.Arm) != 0 {
			t.Fatalf("first answer: commands %v, arm %v", got, d.Arm)
		}
		for attempt, wait := 2, time.Minute; attempt <= cfg.ResolveAttempts; attempt, wait = attempt+1, wait*2 {
			clock = clock.Add(3 * time.Second) // the provider's next silence
			d = handle(t, c, payTimedOutAt(clock), clock)
			if len(d.Commands) != 0 || len(d.Arm) != 1 || d.Arm[0].Kind != domain.TimerResolve || !d.Arm[0].Due.Equal(clock.Add(wait)) {
				t.Fatalf("answer %d: commands %v, arm %+v, want a resolve timer in %s", attempt, summaries(d.Commands, commandSummary), d.Arm, wait)
			}
			if d := handle(t, c, payTimedOutAt(clock), clock); !d.Empty() {
				t.Fatalf("redelivered answer %d decided %+v", attempt, d)
			}
			clock = d.Arm[0].Due
			d = handle(t, c, domain.TimerFired{Kind: domain.TimerResolve, Due: clock}, clock)
			want := fmt.Sprintf("AuthorizePayment co1:authorize-payment-resolve-%d", attempt)
			if got := summaries(d.Commands, commandSummary); !slices.Equal(got, []string{want}) {
				t.Fatalf("timer %d: commands %v, want %s", attempt, got, want)
			}
		}
		lastAsked := clock
		clock = clock.Add(3 * time.Second)
		d = handle(t, c, payTimedOutAt(clock), clock)
		if got := summaries(d.Events, eventSummary); len(d.Commands) != 0 || len(d.Arm) != 0 || !slices.Equal(got, []string{fmt.Sprintf("PaymentReconciling #%d", cfg.ResolveAttempts+1)}) {
			t.Fatalf("answer past the last attempt: events %v, commands %v, arm %v", got, d.Commands, d.Arm)
		}
		r := c.View().PaymentReconciliation
		if r == nil || !r.GivenUp || r.Attempts != cfg.ResolveAttempts+1 || r.LatestAt == nil || !r.LatestAt.Equal(lastAsked) || r.NextAt != nil {
			t.Fatalf("view %+v, want given up after %d, the latest attempt asked at %s, none next", r, cfg.ResolveAttempts+1, lastAsked)
		}
		if d := handle(t, c, domain.TimerFired{Kind: domain.TimerResolve, Due: clock}, clock); !d.Empty() {
			t.Fatalf("a stale resolve timer decided %+v", d)
		}
	})

	t.Run("an approval found is voided and stops the asking", func(t *testing.T) {
		c, clock := start(t)
		handle(t, c, payTimedOutAt(clock), clock)
		if r := c.View().PaymentReconciliation; r == nil || r.Attempts != 1 || r.LatestAt == nil || !r.LatestAt.Equal(clock) || r.NextAt != nil {
			t.Fatalf("view %+v, want 1 attempt asked at once, none next", r)
		}
		handle(t, c, payTimedOutAt(clock.Add(time.Second)), clock.Add(time.Second))
		// The latest attempt is the one asked (a time past), not the one
		// scheduled: that is next_attempt_at.
		if r := c.View().PaymentReconciliation; r == nil || r.Attempts != 2 || r.LatestAt == nil || !r.LatestAt.Equal(clock) ||
			r.NextAt == nil || !r.NextAt.Equal(clock.Add(time.Second+time.Minute)) {
			t.Fatalf("view %+v, want 2 attempts, the latest asked at %s, the next in a minute", r, clock)
		}
		d := handle(t, c, authorized(), clock.Add(2*time.Second))
		if got := summaries(d.Commands, commandSummary); !slices.Equal(got, []string{"VoidPayment co1:void-payment-late"}) || !slices.Equal(d.Cancel, []domain.TimerKind{domain.TimerResolve}) {
			t.Fatalf("late approval: commands %v, cancel %v", got, d.Cancel)
		}
		if r := c.View().PaymentReconciliation; r.NextAt != nil {
			t.Fatalf("view %+v: a next attempt after the approval was found", r)
		}
		if d := handle(t, c, domain.TimerFired{Kind: domain.TimerResolve, Due: clock.Add(time.Minute)}, clock.Add(time.Minute)); !d.Empty() {
			t.Fatalf("resolve timer after the approval decided %+v", d)
		}
	})

	t.Run("a decline found stops the asking", func(t *testing.T) {
		c, clock := start(t)
		handle(t, c, payTimedOutAt(clock), clock)
		handle(t, c, payTimedOutAt(clock.Add(time.Second)), clock.Add(time.Second))
		d := handle(t, c, declined(), clock.Add(2*time.Second))
		if len(d.Commands) != 0 || !slices.Equal(d.Cancel, []domain.TimerKind{domain.TimerResolve}) {
			t.Fatalf("decline: commands %v, cancel %v", summaries(d.Commands, commandSummary), d.Cancel)
		}
	})
}

// The words the saga writes where people read them (the view's failure
// detail, a refund's reason, the reopened cart's reason in
// TestOutOfStockCompensatesAtOnce) are the APIs' lower-case words, never
// an enum's CANCEL_REASON_… name.
func TestVocabularyInDetailsAndReasons(t *testing.T) {
	// The orders side cancels a captured order for fraud: refunded.
	c, _ := build(t, with(hConfirming, captured(), committed()))
	d, err := c.Handle(cancelled(), now)
	if err != nil {
		t.Fatal(err)
	}
	refund := ""
	for _, cmd := range d.Commands {
		if r, ok := cmd.(*paymentsv1.RefundPayment); ok {
			refund = r.GetReason()
		}
	}
	if v := c.View(); v.FailureDetail != "order cancelled: fraud" || refund != "order_rejected" {
		t.Errorf("cancelled for fraud: detail %q, refund reason %q", v.FailureDetail, refund)
	}
	c, _ = build(t, with(hReserved, declined()))
	if v := c.View(); v.FailureDetail != "insufficient_funds" {
		t.Errorf("declined: detail %q", v.FailureDetail)
	}
	c, _ = build(t, with(hReserved, &stockv1.ReservationReleased{ReservationId: "r1", OrderId: oid, Reason: stockv1.ReleaseReason_RELEASE_REASON_MANUAL}))
	if v := c.View(); v.FailureDetail != "reservation released: manual" {
		t.Errorf("released under the saga: detail %q", v.FailureDetail)
	}
}
