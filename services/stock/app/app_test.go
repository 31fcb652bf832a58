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

	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/envelope"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/services/stock/app"
	"github.com/keel-commerce/keel/services/stock/domain"
)

// clock is an injected clock tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

func setup(t testing.TB, cfg app.Config) (*app.Service, *pg.Store, *clock) {
	t.Helper()
	ctx := context.Background()
	pool := testenv.Pool(t)
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	c := &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	cfg.Now = c.Now
	s, err := app.New(ctx, st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, st, c
}

func receive(t testing.TB, s *app.Service, sku, wh string, n int64) {
	t.Helper()
	if _, err := s.Receive(context.Background(), app.Receive{CommandID: fmt.Sprintf("rcv-%s-%s-%d", sku, wh, n), SKU: sku, Warehouse: wh, Quantity: n}); err != nil {
		t.Fatal(err)
	}
}

func TestRace500ReservationsThenExpiry(t *testing.T) {
	ctx := context.Background()
	s, _, c := setup(t, app.Config{})
	receive(t, s, "HOT", "A", 5)
	receive(t, s, "HOT", "B", 5)

	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 500 {
		wg.Go(func() {
			_, err := s.Reserve(ctx, app.Reserve{CommandID: fmt.Sprintf("res-%d", i), OrderID: fmt.Sprintf("o-%d", i),
				Lines: []app.Line{{SKU: "HOT", Quantity: 1}}})
			var rej *command.Rejection
			switch {
			case err == nil:
				ok.Add(1)
			case errors.As(err, &rej) && rej.Code == app.CodeInsufficientStock:
				refused.Add(1)
			default:
				t.Errorf("reserve %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 10 || refused.Load() != 490 {
		t.Fatalf("accepted %d, refused %d; want 10 and 490", ok.Load(), refused.Load())
	}
	st, err := s.Get(ctx, "HOT")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CheckInvariant(); err != nil {
		t.Fatal(err)
	}
	for wh, w := range st.Warehouses() {
		if w.OnHand != 5 || w.Reserved != 5 {
			t.Fatalf("warehouse %s: %+v, want 5 on hand, 5 reserved", wh, w)
		}
	}

	timers := s.Timers()
	if err := timers.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := timers.FireDue(ctx); err != nil || n != 0 {
		t.Fatalf("before the ttl: fired %d, %v", n, err)
	}
	c.Advance(app.DefaultTTL + time.Second)
	if n, err := timers.FireDue(ctx); err != nil || n != 10 {
		t.Fatalf("after the ttl: fired %d, %v; want 10", n, err)
	}
	st, err = s.Get(ctx, "HOT")
	if err != nil {
		t.Fatal(err)
	}
	if st.Available() != 10 || len(st.Reservations()) != 0 {
		t.Fatalf("after expiry: available %d, open %d; want 10 and 0", st.Available(), len(st.Reservations()))
	}
	if err := timers.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM stock_timers`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("timer rows left: %d, %v", left, err)
	}
}

func TestTimersSurviveRestart(t *testing.T) {
	ctx := context.Background()
	s, st, c := setup(t, app.Config{TTLByPaymentMethod: map[string]time.Duration{"invoice": time.Hour}})
	receive(t, s, "S", "A", 3)
	if _, err := s.Reserve(ctx, app.Reserve{CommandID: "c1", OrderID: "o1", PaymentMethod: "invoice", Lines: []app.Line{{SKU: "S", Quantity: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reserve(ctx, app.Reserve{CommandID: "c2", OrderID: "o2", PaymentMethod: "card", Lines: []app.Line{{SKU: "S", Quantity: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Timers().CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	// A new service on the same database: the timers are in PostgreSQL.
	s2, err := app.New(ctx, st, app.Config{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	c.Advance(16 * time.Minute)
	if n, err := s2.Timers().FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("fired %d, %v; want the card reservation only", n, err)
	}
	c.Advance(time.Hour)
	if n, err := s2.Timers().FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("fired %d, %v; want the invoice reservation", n, err)
	}
	got, err := s2.Get(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
	if got.Available() != 3 {
		t.Fatalf("available %d, want 3", got.Available())
	}
}

// TestFailingTimerDoesNotStallOthers: the expiry of a reservation whose
// SKU stream holds an event no version of the service decodes fails on
// every attempt; it is due before another reservation's, which expires all
// the same, while the failing one is backed off, not marked fired.
func TestFailingTimerDoesNotStallOthers(t *testing.T) {
	ctx := context.Background()
	s, st, c := setup(t, app.Config{})
	receive(t, s, "BAD", "A", 1)
	receive(t, s, "OK", "A", 1)
	if _, err := s.Reserve(ctx, app.Reserve{CommandID: "c1", OrderID: "o1", Lines: []app.Line{{SKU: "BAD", Quantity: 1}}}); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Second)
	if _, err := s.Reserve(ctx, app.Reserve{CommandID: "c2", OrderID: "o2", Lines: []app.Line{{SKU: "OK", Quantity: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Timers().CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, app.Stream("BAD"), store.Any, []envelope.Event{{ID: ksuid.New(), Type: "keel.stock.v1.FromTheFuture", Payload: []byte{0xff}}}); err != nil {
		t.Fatal(err)
	}
	c.Advance(app.DefaultTTL + time.Second)
	if n, err := s.Timers().FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("fired %d, %v; want the OK reservation expired", n, err)
	}
	got, err := s.Get(ctx, "OK")
	if err != nil {
		t.Fatal(err)
	}
	if got.Available() != 1 {
		t.Fatalf("OK: available %d, want 1", got.Available())
	}
	var attempts int
	var fired *time.Time
	if err := s.Pool().QueryRow(ctx, `SELECT attempts, fired_at FROM stock_timers WHERE sku = 'BAD'`).Scan(&attempts, &fired); err != nil {
		t.Fatal(err)
	}
	if attempts != 1 || fired != nil {
		t.Fatalf("failing timer: %d attempts, fired at %v", attempts, fired)
	}
}

// TestUpgradeKeepsTimers: a database whose stock_timers the service
// created before its tables were migrated keeps its rows, and they fire.
func TestUpgradeKeepsTimers(t *testing.T) {
	ctx := context.Background()
	s, st, c := setup(t, app.Config{})
	receive(t, s, "S", "A", 1)
	if _, err := s.Reserve(ctx, app.Reserve{CommandID: "c1", OrderID: "o1", Lines: []app.Line{{SKU: "S", Quantity: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Timers().CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	// Back to the tables as the string DDL left them, with their rows.
	if _, err := s.Pool().Exec(ctx, `DROP TABLE goose_stock_version;
ALTER TABLE stock_timers DROP COLUMN attempts, DROP COLUMN retry_at, DROP COLUMN last_error`); err != nil {
		t.Fatal(err)
	}
	s2, err := app.New(ctx, st, app.Config{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	c.Advance(app.DefaultTTL + time.Second)
	if n, err := s2.Timers().FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("after the upgrade: fired %d, %v", n, err)
	}
}

func TestMultiSKUAllOrNothing(t *testing.T) {
	ctx := context.Background()
	s, _, _ := setup(t, app.Config{WarehousePriority: []string{"B", "A"}})
	receive(t, s, "X", "A", 5)
	receive(t, s, "X", "B", 2)
	receive(t, s, "Y", "A", 1)
	_, err := s.Reserve(ctx, app.Reserve{CommandID: "c1", OrderID: "o1", Lines: []app.Line{{SKU: "X", Quantity: 3}, {SKU: "Y", Quantity: 2}}})
	var rej *command.Rejection
	if !errors.As(err, &rej) || rej.Code != app.CodeInsufficientStock {
		t.Fatalf("err = %v, want insufficient stock", err)
	}
	x, _ := s.Get(ctx, "X")
	if x.Available() != 7 {
		t.Fatalf("X available %d after a refused order, want 7", x.Available())
	}
	res, err := s.Reserve(ctx, app.Reserve{CommandID: "c2", OrderID: "o2", Lines: []app.Line{{SKU: "X", Quantity: 6}, {SKU: "Y", Quantity: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	var alloc app.Allocation
	if err := json.Unmarshal(res.Response, &alloc); err != nil {
		t.Fatal(err)
	}
	// X: no single warehouse holds 6, so split by priority: B first.
	if len(alloc.Lines) != 3 || alloc.Lines[0].WarehouseID != "B" || alloc.Lines[0].Quantity != 2 || alloc.Lines[1].Quantity != 4 {
		t.Fatalf("allocation %+v", alloc)
	}
	// Replay: same id, same stored answer, nothing new.
	again, err := s.Reserve(ctx, app.Reserve{CommandID: "c2", OrderID: "o2", Lines: []app.Line{{SKU: "X", Quantity: 6}, {SKU: "Y", Quantity: 1}}})
	if err != nil || !again.Replayed || string(again.Response) != string(res.Response) {
		t.Fatalf("replay: %+v, %v", again, err)
	}
	if _, err := s.Commit(ctx, app.Commit{CommandID: "k1", OrderID: "o2"}); err != nil {
		t.Fatal(err)
	}
	x, _ = s.Get(ctx, "X")
	y, _ := s.Get(ctx, "Y")
	if x.Available() != 1 || y.Available() != 0 || len(x.Reservations()) != 0 {
		t.Fatalf("after commit: X %+v, Y %+v", x.Warehouses(), y.Warehouses())
	}
	_, err = s.Release(ctx, app.Release{CommandID: "r1", OrderID: "o2", Reason: stockv1.ReleaseReason_RELEASE_REASON_MANUAL})
	if !errors.As(err, &rej) || rej.Code != app.CodeUnknownReservation {
		t.Fatalf("release after commit: %v", err)
	}
}

func TestReleaseByIDAndValidation(t *testing.T) {
	ctx := context.Background()
	s, _, _ := setup(t, app.Config{})
	receive(t, s, "S", "A", 2)
	receive(t, s, "S", "B", 2)
	res, err := s.Reserve(ctx, app.Reserve{CommandID: "c1", OrderID: "o1", Lines: []app.Line{{SKU: "S", Quantity: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	var alloc app.Allocation
	_ = json.Unmarshal(res.Response, &alloc)
	reason := stockv1.ReleaseReason_RELEASE_REASON_PAYMENT_FAILED
	if _, err := s.Release(ctx, app.Release{CommandID: "r1", OrderID: "o1", ReservationIDs: []string{alloc.Lines[0].ReservationID}, Reason: reason}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Get(ctx, "S")
	if len(got.Reservations()) != 1 {
		t.Fatalf("open %v", got.Reservations())
	}
	var rej *command.Rejection
	if _, err := s.Release(ctx, app.Release{CommandID: "r2", OrderID: "o1", ReservationIDs: []string{"nope"}, Reason: reason}); !errors.As(err, &rej) || rej.Code != app.CodeUnknownReservation {
		t.Fatalf("unknown id: %v", err)
	}
	if _, err := s.Release(ctx, app.Release{CommandID: "r3", OrderID: "never", Reason: reason}); !errors.Is(err, app.ErrUnknownOrder) {
		t.Fatalf("unknown order: %v", err)
	}
	for _, c := range []app.Reserve{
		{OrderID: "o", Lines: []app.Line{{SKU: "S", Quantity: 1}}},
		{CommandID: "x", Lines: []app.Line{{SKU: "S", Quantity: 1}}},
		{CommandID: "x", OrderID: "o"},
		{CommandID: "x", OrderID: "o", Lines: []app.Line{{SKU: "S", Quantity: 0}}},
		{CommandID: "x", OrderID: "o", Lines: []app.Line{{SKU: "S", Quantity: -1}}},
		{CommandID: "x", OrderID: "o", Lines: []app.Line{{SKU: "", Quantity: 1}}},
		{CommandID: "x", OrderID: "o", Lines: []app.Line{{SKU: "S", Quantity: 1}, {SKU: "S", Quantity: 1}}},
	} {
		if _, err := s.Reserve(ctx, c); !errors.Is(err, app.ErrInvalid) {
			t.Errorf("reserve %+v: %v, want invalid", c, err)
		}
	}
	if _, err := s.Adjust(ctx, app.Adjust{CommandID: "a", SKU: "S", Warehouse: "A", Delta: -5, Reason: stockv1.AdjustmentReason_ADJUSTMENT_REASON_LOST}); !errors.As(err, &rej) || rej.Code != app.CodeBelowReserved {
		t.Fatalf("adjust below reserved: %v", err)
	}
}

// TestShortageRecordsAllocationFailedOnce: an order that cannot be served
// reserves nothing, records AllocationFailed on its own stream with every
// short line, and answers a repeat of the command id the same without
// recording it again; an unknown SKU stays unknown. Only a caller that
// asks for it (the Kafka command path) gets the failure recorded.
func TestShortageRecordsAllocationFailedOnce(t *testing.T) {
	ctx := context.Background()
	s, st, _ := setup(t, app.Config{})
	receive(t, s, "X", "A", 5)
	receive(t, s, "Y", "A", 1)
	c := app.Reserve{CommandID: "c1", OrderID: "o1", CheckoutID: "co1", RecordFailure: true,
		Lines: []app.Line{{SKU: "X", Quantity: 3}, {SKU: "Y", Quantity: 2}, {SKU: "NEVER", Quantity: 1}}}
	// A synchronous caller (HTTP) gets the refusal; nothing is recorded.
	sync := c
	sync.CommandID, sync.RecordFailure = "c0", false
	if _, err := s.Reserve(ctx, sync); !errors.Is(err, domain.ErrInsufficientStock) {
		t.Fatalf("without RecordFailure: %v, want insufficient stock", err)
	}
	if evs, err := st.ReadStream(ctx, app.AllocationStream("o1"), 1, 10); err != nil || len(evs) != 0 {
		t.Fatalf("without RecordFailure the allocation stream holds %d events (%v)", len(evs), err)
	}
	for i := range 2 {
		_, err := s.Reserve(ctx, c)
		var rej *command.Rejection
		if !errors.As(err, &rej) || rej.Code != app.CodeInsufficientStock ||
			rej.Detail != "insufficient stock of Y: requested 2, available 1; insufficient stock of NEVER: requested 1, available 0" {
			t.Fatalf("attempt %d: err = %v, want insufficient stock of Y and NEVER", i, err)
		}
	}
	evs, err := st.ReadStream(ctx, app.AllocationStream("o1"), 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Type != "keel.stock.v1.AllocationFailed" {
		t.Fatalf("allocation stream: %+v, want one AllocationFailed", evs)
	}
	reg, _ := app.Registry()
	msg, err := reg.Decode(evs[0].Type, evs[0].Payload)
	if err != nil {
		t.Fatal(err)
	}
	want := &stockv1.AllocationFailed{OrderId: "o1", CheckoutId: "co1", Shortages: []*stockv1.Shortage{
		{Sku: "Y", Requested: 2, Available: 1}, {Sku: "NEVER", Requested: 1}}}
	got := msg.(*stockv1.AllocationFailed)
	got.FailedAt = nil
	if !proto.Equal(got, want) {
		t.Fatalf("AllocationFailed = %v, want %v", got, want)
	}
	x, _ := s.Get(ctx, "X")
	if x.Available() != 5 || len(x.Reservations()) != 0 {
		t.Fatalf("X after a failed order: available %d, %d reservations", x.Available(), len(x.Reservations()))
	}
	if _, v, err := s.Read(ctx, "NEVER"); err != nil || v.Version != 0 {
		t.Fatalf("unknown SKU got a stream: version %d, %v", v.Version, err)
	}
	if _, err := s.Release(ctx, app.Release{CommandID: "r1", OrderID: "o1", Reason: stockv1.ReleaseReason_RELEASE_REASON_MANUAL}); !errors.Is(err, app.ErrUnknownOrder) {
		t.Fatalf("release of a failed order: %v, want unknown order", err)
	}
	// Stock arrives: the same order under a new command id is served.
	receive(t, s, "Y", "A", 5)
	receive(t, s, "NEVER", "A", 1)
	c.CommandID = "c2"
	if _, err := s.Reserve(ctx, c); err != nil {
		t.Fatal(err)
	}
}
