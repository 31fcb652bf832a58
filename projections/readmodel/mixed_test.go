package readmodel_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	checkoutv1 "github.com/keel-commerce/keel/events/checkout/v1"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/testenv"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/projections/all"
	"github.com/keel-commerce/keel/projections/readmodel"
	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestEveryProjectionRebuildEqualsLive: a mixed workload over the four
// source contexts (carts, orders, checkout, stock: shoppers who abandon,
// check out and complete, or fail by reason and compensate, with stock
// reserved, committed, released or expired on shared SKU streams), then
// every projection rebuilt from the stores equals its live copy row for
// row. KEEL_MIXED_SHOPPERS scales it (default 300 shoppers, about 5,000
// events; 6,000 shoppers is about 100,000).
func TestEveryProjectionRebuildEqualsLive(t *testing.T) {
	n := 300
	if v, err := strconv.Atoi(os.Getenv("KEEL_MIXED_SHOPPERS")); err == nil && v > 0 {
		n = v
	}
	ctx := context.Background()
	h := newHarness(t, "carts", "orders", "checkout", "stock")
	ps := all.All()
	h.runBuilders(ps...)
	events := h.mixedWorkload(ctx, n)
	t.Logf("%d shoppers, %d events", n, events)
	for _, p := range ps {
		h.waitCaughtUp(p)
	}
	for _, p := range ps {
		live, err := readmodel.Active(ctx, h.proj, p.Name())
		testenv.Must(t, err, "active copy")
		start := time.Now()
		rebuilt, err := readmodel.Rebuild(ctx, p, readmodel.RebuildOptions{Pool: h.proj, Stores: h.stores()})
		testenv.Must(t, err, "rebuild %s", p.Name())
		t.Logf("%s: rebuilt in %s", p.Name(), time.Since(start).Round(time.Millisecond))
		liveRows, rebuiltRows := h.dump(live.Schema, p), h.dump(rebuilt.Schema, p)
		rows := 0
		for _, tbl := range p.Tables() {
			rows += len(liveRows[tbl.Name])
		}
		if rows == 0 {
			t.Errorf("%s: the live copy has no rows: the workload does not exercise it", p.Name())
		}
		sameRows(t, p.Name()+" rebuilt vs live", liveRows, rebuiltRows)
	}
}

var skus = func() []string {
	out := make([]string, 40)
	for i := range out {
		out[i] = fmt.Sprintf("SKU-%02d", i)
	}
	return out
}()

// mixedWorkload writes n shoppers' lives across the four contexts, 8 at a
// time, and returns the number of events written.
func (h *harness) mixedWorkload(ctx context.Context, n int) int {
	h.t.Helper()
	// Stock first: every SKU received in two warehouses.
	total := 0
	for _, sku := range skus {
		var msgs []proto.Message
		for _, wh := range []string{"WH-A", "WH-B"} {
			msgs = append(msgs, &stockv1.StockReceived{Sku: sku, WarehouseId: wh, Quantity: 100000, ReceivedAt: timestamppb.New(base)})
		}
		if !h.appendEvents(ctx, "stock", "stock-"+sku, 0, base, msgs...) {
			h.t.FailNow()
		}
		total += len(msgs)
	}
	const writers = 8
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(n), uint64(w)))
			for i := w; i < n; i += writers {
				c := h.shopper(ctx, rnd, i)
				mu.Lock()
				total += c
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return total
}

// shopper writes one shopper's events: a cart, and most of the time a
// checkout with its order, stock and outcome.
func (h *harness) shopper(ctx context.Context, rnd *rand.Rand, i int) int {
	id := fmt.Sprintf("s%d-%s", i, ksuid.New().String()[17:])
	at := base.Add(time.Duration(i) * 13 * time.Second)
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(at.Add(d)) }
	eur := func(v int64) *typesv1.Money { return &typesv1.Money{AmountMinor: v, Currency: "EUR"} }
	cartID, coID, orderID, customer := "cart-"+id, "co-"+id, "order-"+id, fmt.Sprintf("cust-%d", rnd.IntN(80))
	count := 0
	write := func(src, stream string, msgs ...proto.Message) {
		expected := int64(0)
		if src == "stock" {
			expected = int64(store.Any)
		}
		if h.appendEvents(ctx, src, stream, expected, at, msgs...) {
			count += len(msgs)
		}
	}

	// The cart.
	cart := []proto.Message{&cartsv1.CartCreated{CartId: cartID, CustomerId: customer, Currency: "EUR", CreatedAt: ts(0)}}
	var lines []*cartsv1.CartLine
	var subtotal int64
	for l := range 1 + rnd.IntN(3) {
		sku, q, price := skus[(i+l*7+rnd.IntN(3))%len(skus)], int64(1+rnd.IntN(3)), int64(500+rnd.IntN(3000))
		if l > 0 && sku == lines[0].GetSku() {
			continue
		}
		line := &cartsv1.CartLine{Sku: sku, Name: "Thing " + sku, Quantity: q, UnitPrice: eur(price), LineTotal: eur(q * price)}
		lines = append(lines, line)
		subtotal += q * price
		cart = append(cart, &cartsv1.LineAdded{CartId: cartID, Line: line, AddedAt: ts(time.Duration(l+1) * time.Second)})
	}
	if rnd.IntN(5) == 0 { // changes a quantity
		l := lines[0]
		cart = append(cart, &cartsv1.LineQuantityChanged{CartId: cartID, Sku: l.GetSku(), Quantity: l.GetQuantity() + 1, PreviousQuantity: l.GetQuantity(), ChangedAt: ts(5 * time.Second)})
		subtotal += l.GetUnitPrice().GetAmountMinor()
		l.Quantity++
		l.LineTotal = eur(l.GetQuantity() * l.GetUnitPrice().GetAmountMinor())
	}
	if rnd.IntN(5) == 0 { // abandoned
		write("carts", cartID, append(cart, &cartsv1.CartAbandoned{CartId: cartID, Reason: cartsv1.AbandonReason_ABANDON_REASON_IDLE, LastActivityAt: ts(5 * time.Second), AbandonedAt: ts(24 * time.Hour)})...)
		return count
	}
	cart = append(cart, &cartsv1.CheckoutRequested{CartId: cartID, CheckoutId: coID, CartVersion: int64(len(cart)), Lines: lines,
		Totals: &typesv1.Totals{Subtotal: eur(subtotal), Total: eur(subtotal)}, Customer: &typesv1.Customer{CustomerId: customer}, RequestedAt: ts(10 * time.Second)})

	// The order, the stock, the saga.
	var olines []*ordersv1.OrderLine
	var colines []*checkoutv1.CheckoutLine
	for _, l := range lines {
		olines = append(olines, &ordersv1.OrderLine{Sku: l.GetSku(), Name: l.GetName(), Quantity: l.GetQuantity(), UnitPrice: l.GetUnitPrice(), LineTotal: l.GetLineTotal()})
		colines = append(colines, &checkoutv1.CheckoutLine{Sku: l.GetSku(), Name: l.GetName(), Quantity: l.GetQuantity(), UnitPrice: l.GetUnitPrice(), LineTotal: l.GetLineTotal()})
	}
	totals := &typesv1.Totals{Subtotal: eur(subtotal), Total: eur(subtotal)}
	order := []proto.Message{&ordersv1.OrderPlaced{OrderId: orderID, CheckoutId: coID, CartId: cartID, Customer: &typesv1.Customer{CustomerId: customer},
		Lines: olines, Totals: totals, PlacedAt: ts(11 * time.Second)}}
	saga := []proto.Message{
		&checkoutv1.CheckoutStarted{CheckoutId: coID, CartId: cartID, CartVersion: int64(len(cart) - 1), OrderId: orderID, PaymentId: "pay-" + id,
			Lines: colines, Totals: totals, Customer: &typesv1.Customer{CustomerId: customer}, Deadline: ts(15 * time.Minute), StartedAt: ts(10 * time.Second)},
		&checkoutv1.CheckoutStepCompleted{CheckoutId: coID, Step: checkoutv1.Step_STEP_PLACE_ORDER, Reference: orderID, CompletedAt: ts(11 * time.Second)},
	}
	reserve := func(d time.Duration) []string {
		var ids []string
		for j, l := range lines {
			rid := fmt.Sprintf("r-%s-%d", id, j)
			ids = append(ids, rid)
			write("stock", "stock-"+l.GetSku(), &stockv1.StockReserved{ReservationId: rid, Sku: l.GetSku(), WarehouseId: []string{"WH-A", "WH-B"}[j%2],
				Quantity: l.GetQuantity(), OrderId: orderID, CheckoutId: coID, ExpiresAt: ts(15 * time.Minute), ReservedAt: ts(d)})
		}
		return ids
	}
	settle := func(ids []string, d time.Duration, how string) {
		for j, l := range lines {
			wh := []string{"WH-A", "WH-B"}[j%2]
			var m proto.Message
			switch how {
			case "commit":
				m = &stockv1.ReservationCommitted{ReservationId: ids[j], Sku: l.GetSku(), WarehouseId: wh, Quantity: l.GetQuantity(), OrderId: orderID, CommittedAt: ts(d)}
			case "release":
				m = &stockv1.ReservationReleased{ReservationId: ids[j], Sku: l.GetSku(), WarehouseId: wh, Quantity: l.GetQuantity(), OrderId: orderID,
					Reason: stockv1.ReleaseReason_RELEASE_REASON_PAYMENT_FAILED, ReleasedAt: ts(d)}
			default:
				m = &stockv1.ReservationExpired{ReservationId: ids[j], Sku: l.GetSku(), WarehouseId: wh, Quantity: l.GetQuantity(), OrderId: orderID, ExpiredAt: ts(d)}
			}
			write("stock", "stock-"+l.GetSku(), m)
		}
	}
	fail := func(reason checkoutv1.FailureReason, cancel ordersv1.CancelReason, steps ...checkoutv1.Step) {
		saga = append(saga, &checkoutv1.CheckoutCompensating{CheckoutId: coID, Reason: reason, Detail: "x", StepsToCompensate: steps, StartedAt: ts(20 * time.Second)})
		for _, s := range steps {
			saga = append(saga, &checkoutv1.CheckoutStepCompensated{CheckoutId: coID, Step: s, CompensatedAt: ts(21 * time.Second)})
		}
		saga = append(saga, &checkoutv1.CheckoutFailed{CheckoutId: coID, Reason: reason, Detail: "x", FailedAt: ts(22 * time.Second)})
		order = append(order, &ordersv1.OrderCancelled{OrderId: orderID, Reason: cancel, Detail: "x", CancelledAt: ts(21 * time.Second)})
		cart = append(cart, &cartsv1.CartReopened{CartId: cartID, CheckoutId: coID, Reason: "checkout failed", ReopenedAt: ts(22 * time.Second)})
	}
	switch r := rnd.IntN(10); {
	case r < 6: // completed
		ids := reserve(12 * time.Second)
		saga = append(saga,
			&checkoutv1.CheckoutStepCompleted{CheckoutId: coID, Step: checkoutv1.Step_STEP_RESERVE_STOCK, CompletedAt: ts(12 * time.Second)},
			&checkoutv1.CheckoutStepCompleted{CheckoutId: coID, Step: checkoutv1.Step_STEP_AUTHORIZE_PAYMENT, Reference: "auth", CompletedAt: ts(13 * time.Second)},
			&checkoutv1.CheckoutStepCompleted{CheckoutId: coID, Step: checkoutv1.Step_STEP_CONFIRM_ORDER, CompletedAt: ts(14 * time.Second)},
			&checkoutv1.CheckoutStepCompleted{CheckoutId: coID, Step: checkoutv1.Step_STEP_COMMIT_STOCK, CompletedAt: ts(14 * time.Second)},
			&checkoutv1.CheckoutStepCompleted{CheckoutId: coID, Step: checkoutv1.Step_STEP_CAPTURE_PAYMENT, CompletedAt: ts(15 * time.Second)},
			&checkoutv1.CheckoutCompleted{CheckoutId: coID, OrderId: orderID, PaymentId: "pay-" + id, CompletedAt: ts(16 * time.Second)})
		order = append(order, &ordersv1.OrderConfirmed{OrderId: orderID, ConfirmedAt: ts(14 * time.Second)},
			&ordersv1.OrderPaid{OrderId: orderID, PaymentId: "pay-" + id, Amount: eur(subtotal), PaidAt: ts(15 * time.Second)})
		if rnd.IntN(4) == 0 { // cancelled by the customer after confirming
			order = append(order, &ordersv1.OrderCancelled{OrderId: orderID, Reason: ordersv1.CancelReason_CANCEL_REASON_CUSTOMER, CancelledAt: ts(2 * time.Hour)})
		}
		settle(ids, 14*time.Second, "commit")
		cart = append(cart, &cartsv1.CartClosed{CartId: cartID, CheckoutId: coID, OrderId: orderID, ClosedAt: ts(16 * time.Second)})
	case r < 8: // payment declined
		ids := reserve(12 * time.Second)
		saga = append(saga, &checkoutv1.CheckoutStepCompleted{CheckoutId: coID, Step: checkoutv1.Step_STEP_RESERVE_STOCK, CompletedAt: ts(12 * time.Second)})
		fail(checkoutv1.FailureReason_FAILURE_REASON_PAYMENT_DECLINED, ordersv1.CancelReason_CANCEL_REASON_PAYMENT_FAILED,
			checkoutv1.Step_STEP_RESERVE_STOCK, checkoutv1.Step_STEP_PLACE_ORDER)
		settle(ids, 21*time.Second, "release")
	case r < 9: // out of stock
		fail(checkoutv1.FailureReason_FAILURE_REASON_OUT_OF_STOCK, ordersv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK, checkoutv1.Step_STEP_PLACE_ORDER)
	default: // timed out waiting for the payment; the reservation expires
		ids := reserve(12 * time.Second)
		saga = append(saga, &checkoutv1.CheckoutStepCompleted{CheckoutId: coID, Step: checkoutv1.Step_STEP_RESERVE_STOCK, CompletedAt: ts(12 * time.Second)},
			&checkoutv1.CheckoutTimedOut{CheckoutId: coID, AwaitedStep: checkoutv1.Step_STEP_AUTHORIZE_PAYMENT, Deadline: ts(15 * time.Minute), TimedOutAt: ts(15 * time.Minute)})
		fail(checkoutv1.FailureReason_FAILURE_REASON_TIMED_OUT, ordersv1.CancelReason_CANCEL_REASON_CHECKOUT_TIMED_OUT,
			checkoutv1.Step_STEP_RESERVE_STOCK, checkoutv1.Step_STEP_PLACE_ORDER)
		settle(ids, 16*time.Minute, "expire")
	}
	write("carts", cartID, cart...)
	write("orders", orderID, order...)
	write("checkout", "checkout-"+coID, saga...)
	return count
}
