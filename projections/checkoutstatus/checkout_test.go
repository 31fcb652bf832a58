package checkoutstatus_test

import (
	"reflect"
	"testing"
	"time"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	checkoutv1 "github.com/keel-commerce/keel/events/checkout/v1"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	cs "github.com/keel-commerce/keel/projections/checkoutstatus"
	"github.com/keel-commerce/keel/projections/internal/rmtest"
	"github.com/keel-commerce/keel/projections/readmodel"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var t0 = rmtest.T0

func at(sec int) *timestamppb.Timestamp { return rmtest.At(time.Duration(sec) * time.Second) }

func events(s *rmtest.Stream, msgs ...proto.Message) []readmodel.Event {
	return s.Events(t0.Add(time.Hour), msgs...)
}

func stream(id string) *rmtest.Stream {
	return &rmtest.Stream{Context: "checkout", ID: "checkout-" + id}
}

func started(id string) *checkoutv1.CheckoutStarted {
	return &checkoutv1.CheckoutStarted{CheckoutId: id, CartId: "cart-of-" + id, OrderId: "o-" + id, PaymentId: "p-" + id,
		Customer: &typesv1.Customer{CustomerId: "cus-1"}, Totals: &typesv1.Totals{Total: &typesv1.Money{AmountMinor: 1299, Currency: "EUR"}},
		Deadline: at(600), StartedAt: at(0)}
}

func step(id string, s checkoutv1.Step, ref string, sec int) *checkoutv1.CheckoutStepCompleted {
	return &checkoutv1.CheckoutStepCompleted{CheckoutId: id, Step: s, Reference: ref, CompletedAt: at(sec)}
}

func undone(id string, s checkoutv1.Step, sec int) *checkoutv1.CheckoutStepCompensated {
	return &checkoutv1.CheckoutStepCompensated{CheckoutId: id, Step: s, CompensatedAt: at(sec)}
}

func completed(id string) []readmodel.Event {
	return events(stream(id), started(id),
		step(id, checkoutv1.Step_STEP_PLACE_ORDER, "o-"+id, 1),
		step(id, checkoutv1.Step_STEP_RESERVE_STOCK, "r1", 2),
		step(id, checkoutv1.Step_STEP_AUTHORIZE_PAYMENT, "auth", 3),
		step(id, checkoutv1.Step_STEP_CONFIRM_ORDER, "", 4),
		step(id, checkoutv1.Step_STEP_COMMIT_STOCK, "", 5),
		step(id, checkoutv1.Step_STEP_CAPTURE_PAYMENT, "", 6),
		&checkoutv1.CheckoutCompleted{CheckoutId: id, OrderId: "o-" + id, PaymentId: "p-" + id, CompletedAt: at(6)})
}

func declined(id string) []readmodel.Event { return events(stream(id), declinedMessages(id)...) }

func declinedMessages(id string) []proto.Message {
	return []proto.Message{started(id),
		step(id, checkoutv1.Step_STEP_PLACE_ORDER, "o-"+id, 1),
		step(id, checkoutv1.Step_STEP_RESERVE_STOCK, "r1", 2),
		&checkoutv1.CheckoutCompensating{CheckoutId: id, Reason: checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_DECLINED,
			Detail: "card declined", StartedAt: at(3),
			StepsToCompensate: []checkoutv1.Step{checkoutv1.Step_STEP_RESERVE_STOCK, checkoutv1.Step_STEP_PLACE_ORDER}},
		undone(id, checkoutv1.Step_STEP_RESERVE_STOCK, 4),
		undone(id, checkoutv1.Step_STEP_PLACE_ORDER, 5),
		&checkoutv1.CheckoutFailed{CheckoutId: id, Reason: checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_DECLINED,
			Detail: "card declined", FailedAt: at(5)}}
}

// timingOut is a checkout past its deadline, compensating (the order is
// not cancelled yet); all adds the end.
func timingOut(id string, all bool) []readmodel.Event {
	msgs := []proto.Message{started(id),
		step(id, checkoutv1.Step_STEP_PLACE_ORDER, "o-"+id, 1),
		&checkoutv1.CheckoutTimedOut{CheckoutId: id, AwaitedStep: checkoutv1.Step_STEP_RESERVE_STOCK, Deadline: at(600), TimedOutAt: at(601)},
		&checkoutv1.CheckoutCompensating{CheckoutId: id, Reason: checkoutv1.FailureReason_FAILURE_REASON_TIMED_OUT,
			Detail: "checkout deadline passed", StartedAt: at(601), StepsToCompensate: []checkoutv1.Step{checkoutv1.Step_STEP_PLACE_ORDER}},
	}
	if all {
		msgs = append(msgs, undone(id, checkoutv1.Step_STEP_PLACE_ORDER, 602),
			&checkoutv1.CheckoutFailed{CheckoutId: id, Reason: checkoutv1.FailureReason_FAILURE_REASON_TIMED_OUT,
				Detail: "checkout deadline passed", FailedAt: at(602)})
	}
	return events(stream(id), msgs...)
}

func TestCompleted(t *testing.T) {
	got := rmtest.Get(t, rmtest.Fold(t, cs.New(), completed("k1")...), cs.Checkouts, "k1")
	want := cs.Checkout{CheckoutID: "k1", CartID: "cart-of-k1", OrderID: "o-k1", PaymentID: "p-k1", CustomerID: "cus-1",
		Status: cs.StatusCompleted, TotalMinor: 1299, Currency: "EUR",
		Steps: []cs.Step{
			{Step: "place_order", State: cs.StepCompleted, Reference: "o-k1", At: at(1).AsTime()},
			{Step: "reserve_stock", State: cs.StepCompleted, Reference: "r1", At: at(2).AsTime()},
			{Step: "authorize_payment", State: cs.StepCompleted, Reference: "auth", At: at(3).AsTime()},
			{Step: "confirm_order", State: cs.StepCompleted, At: at(4).AsTime()},
			{Step: "commit_stock", State: cs.StepCompleted, At: at(5).AsTime()},
			{Step: "capture_payment", State: cs.StepCompleted, At: at(6).AsTime()},
		},
		StartedAt: at(0).AsTime(), UpdatedAt: at(6).AsTime(), Deadline: at(600).AsTime(), EndedAt: at(6).AsTime()}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestFailures(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		evs                    []readmodel.Event
		status, reason, detail string
		awaited                string
		steps                  int
		ended                  bool
	}{
		{"running", completed("k")[:3], cs.StatusRunning, "", "", "", 2, false},
		{"declined, compensating", declined("k")[:5], cs.StatusCompensating, "payment_declined", "card declined", "", 3, false},
		{"declined, failed", declined("k"), cs.StatusFailed, "payment_declined", "card declined", "", 4, true},
		{"timed out, compensating", timingOut("k", false), cs.StatusCompensating, "timed_out", "checkout deadline passed", "reserve_stock", 1, false},
		{"timed out", timingOut("k", true), cs.StatusTimedOut, "timed_out", "checkout deadline passed", "reserve_stock", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rmtest.Get(t, rmtest.Fold(t, cs.New(), tc.evs...), cs.Checkouts, "k")
			if c.Status != tc.status || c.FailureReason != tc.reason || c.FailureDetail != tc.detail || c.AwaitedStep != tc.awaited ||
				len(c.Steps) != tc.steps || c.EndedAt.IsZero() == tc.ended {
				t.Errorf("got %+v", c)
			}
		})
	}
	c := rmtest.Get(t, rmtest.Fold(t, cs.New(), declined("k")...), cs.Checkouts, "k")
	if s := c.Steps[3]; s != (cs.Step{Step: "place_order", State: cs.StepCompensated, At: at(5).AsTime()}) {
		t.Errorf("last step %+v", s)
	}
}

// TestPaymentReconciling: an unanswered authorization asked about again
// after the checkout failed shows as reconciling steps, the last one given
// up; the status stays failed.
func TestPaymentReconciling(t *testing.T) {
	msgs := []proto.Message{
		&checkoutv1.CheckoutPaymentReconciling{CheckoutId: "k", PaymentId: "p-k", AnsweredAt: at(6), Attempt: 1, RetryAt: at(7), RecordedAt: at(7)},
		&checkoutv1.CheckoutPaymentReconciling{CheckoutId: "k", PaymentId: "p-k", AnsweredAt: at(8), Attempt: 2, RecordedAt: at(9)},
	}
	all := events(stream("k"), append(declinedMessages("k"), msgs...)...)
	c := rmtest.Get(t, rmtest.Fold(t, cs.New(), all...), cs.Checkouts, "k")
	got := c.Steps[len(c.Steps)-2:]
	want := []cs.Step{{Step: "authorize_payment", State: cs.StepReconciling, Reference: "attempt 1", At: at(7).AsTime()},
		{Step: "authorize_payment", State: cs.StepReconciling, Reference: "given up", At: at(9).AsTime()}}
	if !reflect.DeepEqual(got, want) || c.Status != cs.StatusFailed || !c.UpdatedAt.Equal(at(9).AsTime()) {
		t.Errorf("steps %+v, status %s, updated %s", got, c.Status, c.UpdatedAt)
	}
}

func TestInterleavings(t *testing.T) {
	streams := [][]readmodel.Event{completed("k1"), declined("k2"), timingOut("k3", true), timingOut("k4", false)}
	ids := []string{"k1", "k2", "k3", "k4"}
	base := rmtest.Fold(t, cs.New(), rmtest.Concat(streams...)...)
	for seed := range uint64(20) {
		rows := rmtest.Fold(t, cs.New(), rmtest.Interleave(seed, streams...)...)
		for _, id := range ids {
			if a, b := rmtest.Get(t, base, cs.Checkouts, id), rmtest.Get(t, rows, cs.Checkouts, id); !reflect.DeepEqual(a, b) {
				t.Fatalf("seed %d, %s:\n%+v\n%+v", seed, id, a, b)
			}
		}
	}
}

func TestDuplicatesSkipped(t *testing.T) {
	evs := declined("k")
	again := append(append([]readmodel.Event{}, evs[:5]...), evs[2:]...)
	once := rmtest.Get(t, rmtest.Fold(t, cs.New(), evs...), cs.Checkouts, "k")
	if twice := rmtest.Get(t, rmtest.Fold(t, cs.New(), again...), cs.Checkouts, "k"); !reflect.DeepEqual(once, twice) {
		t.Fatalf("with duplicates:\n%+v\nwant %+v", twice, once)
	}
}

// The saga's store also holds its outbox streams (commands); a rebuild
// reads them. They leave no row.
func TestIgnoresOtherTypes(t *testing.T) {
	rows := rmtest.Fold(t, cs.New(), events(&rmtest.Stream{Context: "checkout", ID: "outbox-k"},
		&ordersv1.PlaceOrder{CommandId: "k:place-order", OrderId: "o-k", CheckoutId: "k"},
		&cartsv1.CloseCart{CommandId: "k:close-cart", CartId: "c", CheckoutId: "k"},
		&cartsv1.CheckoutRequested{CartId: "c", CheckoutId: "k"},
	)...)
	rmtest.Missing(t, rows, cs.Checkouts, "k")
}
