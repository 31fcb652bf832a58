package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keel-commerce/keel/events/command"
	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/payments/app"
	"github.com/keel-commerce/keel/services/payments/domain"
	"github.com/keel-commerce/keel/services/payments/gateway/sim"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func setup(t testing.TB, cfg sim.Config) (*app.Service, *pg.Store, *sim.Sim) {
	t.Helper()
	ctx := context.Background()
	st, err := pg.New(ctx, testenv.Pool(t), pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	gw, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := app.New(ctx, st, app.Config{Gateway: gw, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, st, gw
}

func eur(n int64) *typesv1.Money { return &typesv1.Money{AmountMinor: n, Currency: "EUR"} }

func authorize(cmd, payment string, amount int64) *paymentsv1.AuthorizePayment {
	return &paymentsv1.AuthorizePayment{CommandId: cmd, PaymentId: payment, OrderId: "order-1", Amount: eur(amount),
		PaymentMethod: &typesv1.PaymentMethod{Kind: typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_CARD, Token: "tok"}}
}

func view(t testing.TB) func(command.Result, error) app.View {
	return func(res command.Result, err error) app.View { return viewOf(t, res, err) }
}

func viewOf(t testing.TB, res command.Result, err error) app.View {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var v app.View
	if err := json.Unmarshal(res.Response, &v); err != nil {
		t.Fatalf("view %q: %v", res.Response, err)
	}
	return v
}

func code(err error) string {
	var rej *command.Rejection
	if errors.As(err, &rej) {
		return rej.Code
	}
	return ""
}

func types(t testing.TB, st *pg.Store, payment string) []string {
	t.Helper()
	evs, err := st.ReadStream(context.Background(), app.Stream(payment), 1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

// TestAmbiguousTimeoutRetry: the provider charges but the answer times
// out; the payment is recorded unknown; a retry (new command id, same
// payment) resolves it to the original charge: one charge.
func TestAmbiguousTimeoutRetry(t *testing.T) {
	ctx := context.Background()
	s, st, gw := setup(t, sim.Config{Seed: 1, AmbiguousRate: 1})
	v := view(t)(s.Authorize(ctx, authorize("a1", "p1", 1000)))
	if v.Status != "unknown" {
		t.Fatalf("first attempt: %+v, want unknown", v)
	}
	if gw.Charges(domain.AuthorizeKey("p1")) != 1 {
		t.Fatal("the ambiguous attempt should have charged")
	}
	// A retry with another amount is refused before the provider is asked.
	if _, err := s.Authorize(ctx, authorize("a2", "p1", 999)); code(err) != app.CodeAmountMismatch {
		t.Fatalf("retry for another amount: %v", err)
	}
	v = view(t)(s.Authorize(ctx, authorize("a3", "p1", 1000)))
	if v.Status != "authorized" || v.ProviderReference == "" {
		t.Fatalf("retry: %+v, want authorized", v)
	}
	if n := gw.Charges(domain.AuthorizeKey("p1")); n != 1 {
		t.Fatalf("charges %d, want exactly 1", n)
	}
	// The same command id again: the stored answer, no new charge or event.
	if v2 := view(t)(s.Authorize(ctx, authorize("a3", "p1", 1000))); v2.Status != v.Status || v2.ProviderReference != v.ProviderReference {
		t.Fatalf("replay %+v != %+v", v2, v)
	}
	got := fmt.Sprint(types(t, st, "p1"))
	if want := "[keel.payments.v1.PaymentAuthorizationTimedOut keel.payments.v1.PaymentAuthorized]"; got != want {
		t.Fatalf("events %s, want %s", got, want)
	}
	// A capture whose answer is ambiguous records nothing; the same command
	// id completes it without a second capture.
	if _, err := s.Capture(ctx, &paymentsv1.CapturePayment{CommandId: "c1", PaymentId: "p1"}); !errors.Is(err, app.ErrGatewayTimeout) {
		t.Fatalf("ambiguous capture: %v", err)
	}
	v = view(t)(s.Capture(ctx, &paymentsv1.CapturePayment{CommandId: "c1", PaymentId: "p1"}))
	if v.Status != "captured" || v.CapturedMinor != 1000 || gw.Charges(domain.CaptureKey("p1")) != 1 {
		t.Fatalf("capture retry: %+v, charges %d", v, gw.Charges(domain.CaptureKey("p1")))
	}
}

func TestCaptureVoidRefund(t *testing.T) {
	ctx := context.Background()
	s, st, gw := setup(t, sim.Config{Seed: 2})
	view(t)(s.Authorize(ctx, authorize("a1", "p1", 1000)))
	if _, err := s.Capture(ctx, &paymentsv1.CapturePayment{CommandId: "c0", PaymentId: "p1", Amount: eur(1001)}); code(err) != app.CodeExceedsAuthorized {
		t.Fatalf("capture above authorized: %v", err)
	}
	if _, err := s.Capture(ctx, &paymentsv1.CapturePayment{CommandId: "c0b", PaymentId: "p1", Amount: &typesv1.Money{AmountMinor: 10, Currency: "USD"}}); code(err) != app.CodeCurrencyMismatch {
		t.Fatalf("capture in another currency: %v", err)
	}
	if gw.Charges(domain.CaptureKey("p1")) != 0 {
		t.Fatal("a refused capture reached the provider")
	}
	if _, err := s.Refund(ctx, &paymentsv1.RefundPayment{CommandId: "r0", PaymentId: "p1", Amount: eur(1)}); code(err) != app.CodeIllegalTransition {
		t.Fatalf("refund before capture: %v", err)
	}
	v := view(t)(s.Capture(ctx, &paymentsv1.CapturePayment{CommandId: "c1", PaymentId: "p1", Amount: eur(800)}))
	if v.Status != "captured" || v.CapturedMinor != 800 {
		t.Fatalf("capture: %+v", v)
	}
	if _, err := s.Void(ctx, &paymentsv1.VoidPayment{CommandId: "v1", PaymentId: "p1"}); code(err) != app.CodeIllegalTransition {
		t.Fatalf("void after capture: %v", err)
	}
	if gw.Charges(domain.VoidKey("p1")) != 0 {
		t.Fatal("a refused void reached the provider")
	}
	refund := func(cmd, id string, n int64) (command.Result, error) {
		return s.Refund(ctx, &paymentsv1.RefundPayment{CommandId: cmd, PaymentId: "p1", RefundId: id, Amount: eur(n)})
	}
	if v := view(t)(refund("r1", "ref-1", 300)); v.RefundedMinor != 300 || v.Status != "captured" {
		t.Fatalf("refund 1: %+v", v)
	}
	if v := view(t)(refund("r2", "ref-2", 400)); v.RefundedMinor != 700 {
		t.Fatalf("refund 2: %+v", v)
	}
	if _, err := refund("r3", "ref-3", 101); code(err) != app.CodeExceedsCaptured {
		t.Fatalf("refund beyond captured: %v", err)
	}
	if v := view(t)(refund("r1-again", "ref-1", 300)); v.RefundedMinor != 700 {
		t.Fatalf("repeated refund id: %+v", v)
	}
	if _, err := refund("r1-other", "ref-1", 200); code(err) != app.CodeRefundConflict {
		t.Fatalf("refund id reused for another amount: %v", err)
	}
	if v := view(t)(refund("r4", "ref-4", 100)); v.RefundedMinor != 800 || v.Status != "refunded" {
		t.Fatalf("last refund: %+v", v)
	}
	for _, k := range []string{"ref-1", "ref-2", "ref-4"} {
		if n := gw.Charges(domain.RefundKey("p1", k)); n != 1 {
			t.Fatalf("refund %s acted %d times", k, n)
		}
	}
	got, err := s.Get(ctx, "p1")
	if err != nil || got.Status != "refunded" || got.RefundedMinor != 800 || got.CapturedMinor != 800 || got.Version != 5 {
		t.Fatalf("get: %+v, %v", got, err)
	}
	if n := len(types(t, st, "p1")); n != 5 {
		t.Fatalf("%d events, want 5", n)
	}

	// Void an authorization, then nothing more is allowed.
	view(t)(s.Authorize(ctx, authorize("a2", "p2", 500)))
	if v := view(t)(s.Void(ctx, &paymentsv1.VoidPayment{CommandId: "v2", PaymentId: "p2", Reason: "order cancelled"})); v.Status != "voided" {
		t.Fatalf("void: %+v", v)
	}
	if _, err := s.Capture(ctx, &paymentsv1.CapturePayment{CommandId: "c2", PaymentId: "p2"}); code(err) != app.CodeIllegalTransition {
		t.Fatalf("capture after void: %v", err)
	}
	// Unknown payments: not found, nothing stored.
	if _, err := s.Capture(ctx, &paymentsv1.CapturePayment{CommandId: "c9", PaymentId: "p9"}); !errors.Is(err, app.ErrNotFound) {
		t.Fatalf("capture unknown: %v", err)
	}
	if _, err := s.Get(ctx, "p9"); !errors.Is(err, app.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
}

func TestDecline(t *testing.T) {
	ctx := context.Background()
	s, st, _ := setup(t, sim.Config{Seed: 3, DeclineRate: 1})
	v := view(t)(s.Authorize(ctx, authorize("a1", "p1", 1000)))
	if v.Status != "declined" || v.DeclineReason != "insufficient_funds" {
		t.Fatalf("%+v", v)
	}
	if _, err := s.Authorize(ctx, authorize("a2", "p1", 1000)); code(err) != app.CodeIllegalTransition {
		t.Fatalf("authorize a declined payment: %v", err)
	}
	if n := len(types(t, st, "p1")); n != 1 {
		t.Fatalf("%d events", n)
	}
}

// TestAuthorizeRace: 30 concurrent authorizations of one payment, each with
// its own command id: one charge, one PaymentAuthorized; the others are
// refused as illegal transitions (the payment is already authorized).
func TestAuthorizeRace(t *testing.T) {
	ctx := context.Background()
	s, st, gw := setup(t, sim.Config{Seed: 4, Latency: time.Millisecond})
	var mu sync.Mutex
	outcomes := map[string]int{}
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			res, err := s.Authorize(ctx, authorize(fmt.Sprintf("a%d", i), "p1", 1000))
			k := code(err)
			if err == nil {
				k = viewOf(t, res, nil).Status
			} else if k == "" {
				t.Errorf("authorize %d: %v", i, err)
			}
			mu.Lock()
			outcomes[k]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if outcomes["authorized"] != 1 || outcomes[app.CodeIllegalTransition] != 29 {
		t.Fatalf("outcomes %v, want 1 authorized, 29 illegal_transition", outcomes)
	}
	if gw.Charges(domain.AuthorizeKey("p1")) != 1 || len(types(t, st, "p1")) != 1 {
		t.Fatalf("charges %d, events %v", gw.Charges(domain.AuthorizeKey("p1")), types(t, st, "p1"))
	}
}
