package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-commerce/keel/events/command"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/orders/app"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func setup(t testing.TB) (*app.Service, *pg.Store) {
	t.Helper()
	ctx := context.Background()
	st, err := pg.New(ctx, testenv.Pool(t), pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	s, err := app.New(ctx, st, app.Config{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, st
}

func eur(n int64) *typesv1.Money { return &typesv1.Money{AmountMinor: n, Currency: "EUR"} }

func placeCmd(cmdID, checkout string) *ordersv1.PlaceOrder {
	return &ordersv1.PlaceOrder{CommandId: cmdID, CheckoutId: checkout, CartId: "cart-1",
		Customer:        &typesv1.Customer{CustomerId: "cus-1", Email: "a@example.com"},
		ShippingAddress: &typesv1.Address{Line1: "1 Road", City: "Berlin", CountryCode: "DE"},
		Lines:           []*ordersv1.OrderLine{{Sku: "a", Quantity: 2, UnitPrice: eur(250)}, {Sku: "b", Quantity: 1, UnitPrice: eur(1000)}}}
}

func events(t testing.TB, st *pg.Store, stream string) int {
	t.Helper()
	evs, err := st.ReadStream(context.Background(), stream, 1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

func receipt(t testing.TB, res command.Result) app.Receipt {
	t.Helper()
	var r app.Receipt
	if err := json.Unmarshal(res.Response, &r); err != nil {
		t.Fatalf("receipt %q: %v", res.Response, err)
	}
	return r
}

func code(err error) string {
	var rej *command.Rejection
	if errors.As(err, &rej) {
		return rej.Code
	}
	return ""
}

// TestPlaceRace: 50 concurrent PlaceOrder for one checkout, each with its
// own command id: exactly one order (one OrderPlaced), exactly one receipt
// says created, all succeed.
func TestPlaceRace(t *testing.T) {
	ctx := context.Background()
	s, st := setup(t)
	var created, ok atomic.Int64
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			res, err := s.Place(ctx, placeCmd(fmt.Sprintf("place-%d", i), "co-1"))
			if err != nil {
				t.Errorf("place %d: %v", i, err)
				return
			}
			ok.Add(1)
			r := receipt(t, res)
			if r.OrderID != "order-co-1" || r.Status != "pending" {
				t.Errorf("place %d: receipt %+v", i, r)
			}
			if r.Created {
				created.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 50 || created.Load() != 1 {
		t.Fatalf("accepted %d, created %d; want 50 and 1", ok.Load(), created.Load())
	}
	if n := events(t, st, "order-co-1"); n != 1 {
		t.Fatalf("order stream holds %d events, want 1", n)
	}
	v, err := s.Get(ctx, "order-co-1")
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != "pending" || v.Totals.Total.AmountMinor != 1500 || len(v.Lines) != 2 || v.CheckoutID != "co-1" {
		t.Fatalf("view %+v", v)
	}
}

func TestLifecycleAndRefusals(t *testing.T) {
	ctx := context.Background()
	s, st := setup(t)
	id := "order-co-1"
	if _, err := s.Place(ctx, placeCmd("p1", "co-1")); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		run  func() (command.Result, error)
		code string // "" = accepted
		want string // status after
	}{
		{"ship pending", func() (command.Result, error) {
			return s.Ship(ctx, &ordersv1.ShipOrder{CommandId: "s0", OrderId: id, ShipmentId: "sh", Carrier: "DHL"})
		}, app.CodeIllegalTransition, "pending"},
		{"pay pending", func() (command.Result, error) {
			return s.MarkPaid(ctx, &ordersv1.MarkOrderPaid{CommandId: "m0", OrderId: id, PaymentId: "pay", Amount: eur(1500)})
		}, app.CodeIllegalTransition, "pending"},
		{"confirm", func() (command.Result, error) {
			return s.Confirm(ctx, &ordersv1.ConfirmOrder{CommandId: "c1", OrderId: id})
		}, "", "confirmed"},
		{"confirm twice", func() (command.Result, error) {
			return s.Confirm(ctx, &ordersv1.ConfirmOrder{CommandId: "c2", OrderId: id})
		}, app.CodeIllegalTransition, "confirmed"},
		{"pay wrong amount", func() (command.Result, error) {
			return s.MarkPaid(ctx, &ordersv1.MarkOrderPaid{CommandId: "m1", OrderId: id, PaymentId: "pay", Amount: eur(1499)})
		}, app.CodeAmountMismatch, "confirmed"},
		{"pay wrong currency", func() (command.Result, error) {
			return s.MarkPaid(ctx, &ordersv1.MarkOrderPaid{CommandId: "m2", OrderId: id, PaymentId: "pay", Amount: &typesv1.Money{AmountMinor: 1500, Currency: "USD"}})
		}, app.CodeCurrencyMismatch, "confirmed"},
		{"pay", func() (command.Result, error) {
			return s.MarkPaid(ctx, &ordersv1.MarkOrderPaid{CommandId: "m3", OrderId: id, PaymentId: "pay", Amount: eur(1500)})
		}, "", "paid"},
		{"cancel paid", func() (command.Result, error) {
			return s.Cancel(ctx, &ordersv1.CancelOrder{CommandId: "x1", OrderId: id, Reason: ordersv1.CancelReason_CANCEL_REASON_CUSTOMER})
		}, app.CodeRefundRequired, "paid"},
		{"ship", func() (command.Result, error) {
			return s.Ship(ctx, &ordersv1.ShipOrder{CommandId: "s1", OrderId: id, ShipmentId: "sh", Carrier: "DHL", TrackingNumber: "T1"})
		}, "", "shipped"},
		{"replayed ship", func() (command.Result, error) {
			return s.Ship(ctx, &ordersv1.ShipOrder{CommandId: "s1", OrderId: id, ShipmentId: "sh", Carrier: "DHL", TrackingNumber: "T1"})
		}, "", "shipped"},
		{"replayed refusal", func() (command.Result, error) {
			return s.Confirm(ctx, &ordersv1.ConfirmOrder{CommandId: "c2", OrderId: id})
		}, app.CodeIllegalTransition, "shipped"},
	}
	for _, step := range steps {
		res, err := step.run()
		if got := code(err); got != step.code || (step.code == "" && err != nil) {
			t.Fatalf("%s: err %v (code %q), want code %q", step.name, err, got, step.code)
		}
		if err == nil && receipt(t, res).Status != step.want {
			t.Fatalf("%s: receipt %s", step.name, res.Response)
		}
		v, err := s.Get(ctx, id)
		if err != nil || v.Status != step.want {
			t.Fatalf("%s: view %+v, %v; want %s", step.name, v, err, step.want)
		}
	}
	if n := events(t, st, id); n != 4 {
		t.Fatalf("%d events, want 4 (placed, confirmed, paid, shipped)", n)
	}
}

func TestCancelAndUnknown(t *testing.T) {
	ctx := context.Background()
	s, st := setup(t)
	if _, err := s.Place(ctx, placeCmd("p1", "co-2")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Cancel(ctx, &ordersv1.CancelOrder{CommandId: "x0", OrderId: "order-co-2"}); code(err) != app.CodeInvalid {
		t.Fatalf("cancel without reason: %v", err)
	}
	res, err := s.Cancel(ctx, &ordersv1.CancelOrder{CommandId: "x1", OrderId: "order-co-2", Reason: ordersv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK, Detail: "sku a"})
	if err != nil || receipt(t, res).Status != "cancelled" {
		t.Fatalf("cancel: %s, %v", res.Response, err)
	}
	if _, err := s.Confirm(ctx, &ordersv1.ConfirmOrder{CommandId: "c1", OrderId: "order-co-2"}); code(err) != app.CodeIllegalTransition {
		t.Fatalf("confirm cancelled: %v", err)
	}
	v, err := s.Get(ctx, "order-co-2")
	if err != nil || v.CancelReason != "out_of_stock" || v.CancelDetail != "sku a" {
		t.Fatalf("view %+v, %v", v, err)
	}
	// An unknown order: not found, nothing stored, the id stays usable.
	if _, err := s.Confirm(ctx, &ordersv1.ConfirmOrder{CommandId: "c9", OrderId: "order-co-9"}); !errors.Is(err, app.ErrNotFound) {
		t.Fatalf("confirm unknown: %v", err)
	}
	if _, err := s.Get(ctx, "order-co-9"); !errors.Is(err, app.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	if _, err := s.Place(ctx, placeCmd("c9", "co-9")); err != nil {
		t.Fatalf("place after not found with the same command id: %v", err)
	}
	if n := events(t, st, "order-co-9"); n != 1 {
		t.Fatalf("%d events", n)
	}
	// Totals that do not add up: refused with a code, nothing appended.
	bad := placeCmd("p3", "co-3")
	bad.Totals = &typesv1.Totals{Total: eur(1)}
	if _, err := s.Place(ctx, bad); code(err) != app.CodeTotalsMismatch {
		t.Fatalf("bad totals: %v", err)
	}
	if n := events(t, st, "order-co-3"); n != 0 {
		t.Fatalf("%d events after a refusal", n)
	}
}
