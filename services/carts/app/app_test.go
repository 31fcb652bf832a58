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

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/carts/app"
	"github.com/keel-commerce/keel/services/carts/domain"
)

// prices is an in-memory catalog: SKU-nnn costs nnn cents in EUR, USD-1 is in dollars.
type prices struct{}

func (prices) Product(_ context.Context, sku string) (domain.Product, error) {
	var n int64
	if _, err := fmt.Sscanf(sku, "SKU-%d", &n); err == nil {
		return domain.Product{SKU: sku, Name: "Product " + sku, UnitPrice: &typesv1.Money{AmountMinor: n, Currency: "EUR"}}, nil
	}
	if sku == "USD-1" {
		return domain.Product{SKU: sku, Name: "Dollar thing", UnitPrice: &typesv1.Money{AmountMinor: 100, Currency: "USD"}}, nil
	}
	return domain.Product{}, fmt.Errorf("%w: %s", app.ErrUnknownSKU, sku)
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newService(t *testing.T, pool *pgxpool.Pool, clk *clock) *app.Service {
	t.Helper()
	ctx := context.Background()
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	svc, err := app.New(ctx, st, prices{}, app.Config{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc
}

// ok returns a function taking a command's outcome to the cart view it answered.
func ok(t *testing.T) func(command.Result, error) app.View {
	t.Helper()
	return func(res command.Result, err error) app.View {
		t.Helper()
		return view(t, res, err)
	}
}

func view(t *testing.T, res command.Result, err error) app.View {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var v app.View
	if err := json.Unmarshal(res.Response, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func code(err error) string {
	var r *command.Rejection
	if errors.As(err, &r) {
		return r.Code
	}
	return fmt.Sprintf("not a rejection: %v", err)
}

var checkout = app.RequestCheckout{
	Customer:        &typesv1.Customer{CustomerId: "cus-1", Email: "ada@example.com"},
	ShippingAddress: &typesv1.Address{Name: "Ada", Line1: "1 Main St", City: "Berlin", PostalCode: "10115", CountryCode: "DE"},
	PaymentMethod:   &typesv1.PaymentMethod{Kind: typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_CARD, Token: "tok"},
}

func TestCartThroughCheckout(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: t0}
	svc := newService(t, testenv.Pool(t), clk)
	ok(t)(svc.Create(ctx, app.Create{CommandID: "c", CartID: "k1", CustomerID: "cus-1", Currency: "EUR"}))
	v := ok(t)(svc.AddLine(ctx, app.AddLine{CommandID: "a1", CartID: "k1", SKU: "SKU-250", Quantity: 2}))
	if v.Subtotal.AmountMinor != 500 || len(v.Lines) != 1 || v.Lines[0].Name != "Product SKU-250" {
		t.Fatalf("after add: %+v", v)
	}
	ok(t)(svc.AddLine(ctx, app.AddLine{CommandID: "a2", CartID: "k1", SKU: "SKU-1000", Quantity: 1}))
	ok(t)(svc.AddLine(ctx, app.AddLine{CommandID: "a3", CartID: "k1", SKU: "SKU-7", Quantity: 1}))
	ok(t)(svc.ChangeQuantity(ctx, app.ChangeQuantity{CommandID: "q", CartID: "k1", SKU: "SKU-1000", Quantity: 3}))
	v = ok(t)(svc.RemoveLine(ctx, app.RemoveLine{CommandID: "r", CartID: "k1", SKU: "SKU-7"}))
	if v.Subtotal.AmountMinor != 3500 || v.Version != 6 {
		t.Fatalf("before checkout: %+v", v)
	}
	// Refusals, none of which stores an event.
	if _, err := svc.AddLine(ctx, app.AddLine{CommandID: "x1", CartID: "k1", SKU: "NOPE", Quantity: 1}); !errors.Is(err, app.ErrUnknownSKU) {
		t.Fatalf("unknown sku: %v", err)
	}
	if _, err := svc.AddLine(ctx, app.AddLine{CommandID: "x2", CartID: "k1", SKU: "USD-1", Quantity: 1}); code(err) != app.CodeCurrencyMismatch {
		t.Fatalf("currency: %v", err)
	}
	if _, err := svc.AddLine(ctx, app.AddLine{CommandID: "x3", CartID: "k1", SKU: "SKU-1", Quantity: 0}); !errors.Is(err, app.ErrInvalid) {
		t.Fatalf("zero quantity: %v", err)
	}
	if _, err := svc.AddLine(ctx, app.AddLine{CommandID: "x4", CartID: "nope", SKU: "SKU-1", Quantity: 1}); code(err) != app.CodeUnknownCart {
		t.Fatalf("unknown cart: %v", err)
	}
	if _, err := svc.Get(ctx, "nope"); !errors.Is(err, app.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	co := checkout
	co.CommandID, co.CartID, co.CheckoutID, co.ExpectedVersion = "co", "k1", "chk-1", 6
	v = ok(t)(svc.RequestCheckout(ctx, co))
	if v.Status != "checking_out" || v.CheckoutID != "chk-1" {
		t.Fatalf("after checkout: %+v", v)
	}
	if _, err := svc.AddLine(ctx, app.AddLine{CommandID: "x5", CartID: "k1", SKU: "SKU-1", Quantity: 1}); code(err) != app.CodeCartFrozen {
		t.Fatalf("frozen: %v", err)
	}
	// The event carries the frozen cart.
	evs, err := svc.Pool().Query(ctx, `SELECT payload FROM events WHERE stream_id = 'cart-k1' AND type LIKE '%CheckoutRequested'`)
	if err != nil {
		t.Fatal(err)
	}
	var payloads [][]byte
	for evs.Next() {
		var b []byte
		if err := evs.Scan(&b); err != nil {
			t.Fatal(err)
		}
		payloads = append(payloads, b)
	}
	evs.Close()
	if len(payloads) != 1 {
		t.Fatalf("%d CheckoutRequested events", len(payloads))
	}
	var cr cartsv1.CheckoutRequested
	if err := proto.Unmarshal(payloads[0], &cr); err != nil {
		t.Fatal(err)
	}
	if cr.GetCartVersion() != 6 || len(cr.GetLines()) != 2 || cr.GetTotals().GetTotal().GetAmountMinor() != 3500 ||
		cr.GetShippingAddress().GetCity() != "Berlin" || cr.GetCustomer().GetEmail() != "ada@example.com" || cr.GetPaymentMethod().GetToken() != "tok" {
		t.Fatalf("CheckoutRequested %v", &cr)
	}
	// No abandon timer while checking out.
	if n := timers(t, svc); n != 0 {
		t.Fatalf("%d timers while checking out", n)
	}
	v = ok(t)(svc.Reopen(ctx, app.Reopen{CommandID: "re", CartID: "k1", CheckoutID: "chk-1", Reason: "payment declined"}))
	if v.Status != "open" || timers(t, svc) != 1 {
		t.Fatalf("after reopen: %+v, %d timers", v, timers(t, svc))
	}
	co.CommandID, co.CheckoutID, co.ExpectedVersion = "co2", "chk-2", 0
	ok(t)(svc.RequestCheckout(ctx, co))
	v = ok(t)(svc.CloseCart(ctx, app.Close{CommandID: "cl", CartID: "k1", CheckoutID: "chk-2", OrderID: "ord-1"}))
	if v.Status != "closed" || timers(t, svc) != 0 {
		t.Fatalf("after close: %+v", v)
	}
	// A replayed command id answers what it answered first.
	res, err := svc.AddLine(ctx, app.AddLine{CommandID: "a1", CartID: "k1", SKU: "SKU-250", Quantity: 2})
	if err != nil || !res.Replayed || view(t, res, nil).Version != 2 {
		t.Fatalf("replay: %+v %v", res, err)
	}
}

func timers(t *testing.T, svc *app.Service) int {
	t.Helper()
	var n int
	if err := svc.Pool().QueryRow(context.Background(), `SELECT count(*) FROM cart_timers`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAbandonTimer: an idle cart is abandoned by the timer at the injected
// clock's now, activity postpones it, and a new service instance on the
// same database (a restart) fires what the old one left due.
func TestAbandonTimer(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	clk := &clock{t: t0}
	svc := newService(t, pool, clk)
	for _, id := range []string{"idle", "busy", "gone"} {
		ok(t)(svc.Create(ctx, app.Create{CommandID: "c-" + id, CartID: id, Currency: "EUR"}))
	}
	co := checkout
	co.CommandID, co.CartID = "co-gone", "gone"
	ok(t)(svc.AddLine(ctx, app.AddLine{CommandID: "a-gone", CartID: "gone", SKU: "SKU-1", Quantity: 1}))
	ok(t)(svc.RequestCheckout(ctx, co))

	clk.Add(23 * time.Hour)
	if n, err := svc.Timers().FireDue(ctx); err != nil || n != 0 {
		t.Fatalf("at 23h: fired %d, %v", n, err)
	}
	ok(t)(svc.AddLine(ctx, app.AddLine{CommandID: "a-busy", CartID: "busy", SKU: "SKU-5", Quantity: 1}))
	svc.Close() // the process stops; its timers are rows

	clk.Add(2 * time.Hour) // 25h: "idle" is due, "busy" (active at 23h) is not
	svc2 := newService(t, pool, clk)
	if n, err := svc2.Timers().FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("at 25h after restart: fired %d, %v", n, err)
	}
	if v, _ := svc2.Get(ctx, "idle"); v.Status != "abandoned" {
		t.Fatalf("idle cart: %+v", v)
	}
	if v, _ := svc2.Get(ctx, "busy"); v.Status != "open" {
		t.Fatalf("busy cart: %+v", v)
	}
	if v, _ := svc2.Get(ctx, "gone"); v.Status != "checking_out" {
		t.Fatalf("checked-out cart: %+v", v)
	}
	// Firing the same timer again (another replica, a crash before the
	// row was read back) decides nothing new.
	if res, err := svc2.Abandon(ctx, "idle", 1); err != nil || !res.Replayed {
		t.Fatalf("second fire: %+v, %v", res, err)
	}
	clk.Add(22 * time.Hour) // 47h: "busy" is due (23h + 24h)
	if n, err := svc2.Timers().FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("at 47h: fired %d, %v", n, err)
	}
	if n := timers(t, svc2); n != 0 {
		t.Fatalf("%d timers left", n)
	}
	var abandoned int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE type LIKE '%CartAbandoned'`).Scan(&abandoned); err != nil || abandoned != 2 {
		t.Fatalf("%d CartAbandoned events, %v", abandoned, err)
	}
	// A reopened cart gets a new timer.
	ok(t)(svc2.Reopen(ctx, app.Reopen{CommandID: "re-idle", CartID: "idle"}))
	if n := timers(t, svc2); n != 1 {
		t.Fatalf("%d timers after reopen", n)
	}
}

// TestAbandonAfterGrew: a timer written under a shorter AbandonAfter is
// rescheduled, not lost, when the cart is not idle long enough under the
// current one.
func TestAbandonAfterGrew(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	clk := &clock{t: t0}
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	short, err := app.New(ctx, st, prices{}, app.Config{Now: clk.Now, AbandonAfter: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ok(t)(short.Create(ctx, app.Create{CommandID: "c", CartID: "k", Currency: "EUR"}))
	short.Close()
	long, err := app.New(ctx, st, prices{}, app.Config{Now: clk.Now, AbandonAfter: 3 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	clk.Add(2 * time.Hour)
	if n, err := long.Timers().FireDue(ctx); err != nil || n != 0 {
		t.Fatalf("at 2h: %d, %v", n, err)
	}
	clk.Add(time.Hour)
	if n, err := long.Timers().FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("at 3h: %d, %v", n, err)
	}
}

// TestFailingTimerDoesNotStallOthers: a cart whose abandon fails on every
// attempt (its stream holds an event no version of the service decodes)
// is due before an idle cart; the idle cart is abandoned all the same, and
// the failing timer is backed off, not dropped.
func TestFailingTimerDoesNotStallOthers(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	clk := &clock{t: t0}
	svc := newService(t, pool, clk)
	ok(t)(svc.Create(ctx, app.Create{CommandID: "c-bad", CartID: "bad", Currency: "EUR"}))
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Append(ctx, app.Stream("bad"), store.Any, []envelope.Event{{ID: ksuid.New(), Type: "keel.carts.v1.FromTheFuture", Payload: []byte{0xff}}}); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	ok(t)(svc.Create(ctx, app.Create{CommandID: "c-idle", CartID: "idle", Currency: "EUR"}))

	clk.Add(25 * time.Hour)
	if n, err := svc.Timers().FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("fired %d, %v; want the idle cart abandoned", n, err)
	}
	if v, _ := svc.Get(ctx, "idle"); v.Status != "abandoned" {
		t.Fatalf("idle cart: %+v", v)
	}
	var attempts int
	var retryAt time.Time
	if err := pool.QueryRow(ctx, `SELECT attempts, retry_at FROM cart_timers WHERE cart_id = 'bad'`).Scan(&attempts, &retryAt); err != nil {
		t.Fatal(err)
	}
	if attempts != 1 || !retryAt.After(clk.Now()) {
		t.Fatalf("failing timer: %d attempts, retry at %s (now %s)", attempts, retryAt, clk.Now())
	}
}

// TestUpgradeKeepsTimers: a database whose cart_timers the service created
// before its tables were migrated keeps its rows, and they fire.
func TestUpgradeKeepsTimers(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	clk := &clock{t: t0}
	old := newService(t, pool, clk)
	ok(t)(old.Create(ctx, app.Create{CommandID: "c", CartID: "k", Currency: "EUR"}))
	// Back to the table as the string DDL left it, with its row.
	if _, err := pool.Exec(ctx, `DROP TABLE goose_carts_version;
ALTER TABLE cart_timers DROP COLUMN attempts, DROP COLUMN retry_at, DROP COLUMN last_error`); err != nil {
		t.Fatal(err)
	}
	svc := newService(t, pool, clk)
	clk.Add(25 * time.Hour)
	if n, err := svc.Timers().FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("after the upgrade: fired %d, %v", n, err)
	}
}

// TestCheckoutRace: 30 checkouts of one cart under different command ids
// race; exactly one freezes it, 29 are refused as frozen.
func TestCheckoutRace(t *testing.T) {
	ctx := context.Background()
	svc := newService(t, testenv.Pool(t), &clock{t: t0})
	ok(t)(svc.Create(ctx, app.Create{CommandID: "c", CartID: "k", Currency: "EUR"}))
	ok(t)(svc.AddLine(ctx, app.AddLine{CommandID: "a", CartID: "k", SKU: "SKU-10", Quantity: 1}))
	var won, frozen atomic.Int64
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			co := checkout
			co.CommandID, co.CartID = fmt.Sprintf("co-%d", i), "k"
			_, err := svc.RequestCheckout(ctx, co)
			switch {
			case err == nil:
				won.Add(1)
			case code(err) == app.CodeCartFrozen:
				frozen.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if won.Load() != 1 || frozen.Load() != 29 {
		t.Fatalf("won %d, frozen %d", won.Load(), frozen.Load())
	}
}

// TestLineLimitRace: 130 different SKUs race into one cart; exactly 100
// fit, 30 are refused as too many lines.
func TestLineLimitRace(t *testing.T) {
	ctx := context.Background()
	svc := newService(t, testenv.Pool(t), &clock{t: t0})
	ok(t)(svc.Create(ctx, app.Create{CommandID: "c", CartID: "k", Currency: "EUR"}))
	var won, full atomic.Int64
	var wg sync.WaitGroup
	for i := range 130 {
		wg.Go(func() {
			_, err := svc.AddLine(ctx, app.AddLine{CommandID: fmt.Sprintf("a-%d", i), CartID: "k", SKU: fmt.Sprintf("SKU-%d", i+1), Quantity: 1})
			switch {
			case err == nil:
				won.Add(1)
			case code(err) == app.CodeTooManyLines:
				full.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	v, err := svc.Get(ctx, "k")
	if err != nil || won.Load() != domain.MaxLines || full.Load() != 30 || len(v.Lines) != domain.MaxLines {
		t.Fatalf("won %d, full %d, lines %d, %v", won.Load(), full.Load(), len(v.Lines), err)
	}
}
