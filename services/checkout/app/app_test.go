package app_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/consume"
	"github.com/keel-commerce/keel/events/envelope"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	"github.com/keel-commerce/keel/events/relay"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/events/topics"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/events/wire"
	"github.com/keel-commerce/keel/services/checkout/app"
	"github.com/keel-commerce/keel/services/checkout/domain"
)

func brokers() []string { return testenv.KafkaBrokers() }

// clock is the injected clock: it only moves when a test moves it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is one test's database, topics and producer; start runs a process
// manager on them.
type env struct {
	t      *testing.T
	st     *pg.Store
	clock  *clock
	prefix string
	group  string
	cl     *kgo.Client
	adm    *kadm.Client
	reg    *codec.Registry
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	pool := testenv.Pool(t)
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers()...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	e := &env{t: t, st: st, clock: &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
		prefix: "test." + strings.ToLower(ksuid.New().String()) + ".", cl: cl, adm: kadm.NewClient(cl), reg: codec.All()}
	e.group = app.Group + "-" + e.prefix
	var specs []topics.Spec
	var names []string
	for _, tp := range app.InputTopics() {
		specs = append(specs, topics.EventSpec(e.prefix+tp, 3, 1), topics.DLQSpec(topics.DLQ(e.prefix+tp), 1, 1))
		names = append(names, e.prefix+tp, topics.DLQ(e.prefix+tp))
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := topics.Ensure(cctx, e.adm, specs...); err != nil {
		t.Fatalf("create topics (is Kafka up? run `make up`): %v", err)
	}
	testenv.DeleteTopicsAtEnd(t, names...)
	// A new topic reaches every broker's metadata a moment after creation;
	// the consumer refuses to start on a topic it cannot see yet.
	for {
		details, err := e.adm.ListTopics(cctx, names...)
		if err == nil {
			n := 0
			for _, d := range details {
				if d.Err == nil && len(d.Partitions) > 0 {
					n++
				}
			}
			if n == len(names) {
				break
			}
		}
		if cctx.Err() != nil {
			t.Fatalf("topics not visible after 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return e
}

func (e *env) topics() []string {
	var out []string
	for _, tp := range app.InputTopics() {
		out = append(out, e.prefix+tp)
	}
	return out
}

// start runs a saga (consumer + nothing else: tests fire timers
// themselves) and returns it with its stop function.
func (e *env) start() (*app.Saga, func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	saga, err := app.New(ctx, app.Config{Store: e.st, Now: e.clock.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := consume.New(consume.Config{Brokers: brokers(), Group: e.group, Topics: e.topics(), Pool: e.st.Pool(),
		Retry:     consume.RetryPolicy{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
		KafkaOpts: []kgo.Opt{kgo.HeartbeatInterval(300 * time.Millisecond), kgo.SessionTimeout(6 * time.Second)}}, saga)
	if err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("consumer: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return saga, stop
}

// send produces each event as a Keel record (envelope headers, protobuf
// value) on its context's topic, `times` times each (same ce_id: one event
// delivered more than once).
func (e *env) send(times int, msgs ...proto.Message) {
	e.t.Helper()
	var recs []*kgo.Record
	for _, m := range msgs {
		typ, payload, err := e.reg.Encode(m)
		if err != nil {
			e.t.Fatal(err)
		}
		ctxName := strings.Split(typ, ".")[1]
		key, _ := app.CheckoutOf(m)
		ev := envelope.Event{ID: ksuid.New(), Type: typ, StreamID: ctxName + "-" + key, Version: 1, Payload: payload,
			RecordedAt: time.Now()}
		for range times {
			recs = append(recs, wire.Record(e.prefix+topics.Events(ctxName), "keel/"+ctxName, ev))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
}

// commands names the commands a checkout put on its outbox.
func (e *env) commands(saga *app.Saga, id string) []string {
	e.t.Helper()
	cmds, err := saga.Commands(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	out := []string{}
	for _, c := range cmds {
		f := c.ProtoReflect().Descriptor().Fields().ByName("command_id")
		out = append(out, string(c.ProtoReflect().Descriptor().Name())+" "+c.ProtoReflect().Get(f).String())
	}
	return out
}

func (e *env) status(saga *app.Saga, id string) domain.Status {
	e.t.Helper()
	c, ok, err := saga.Get(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	if !ok {
		return domain.StatusNew
	}
	return c.Status()
}

// waitCommands waits until the checkout's outbox holds n commands.
func (e *env) waitCommands(saga *app.Saga, id string, n int) {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if len(e.commands(saga, id)) >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("checkout %s: %d commands after 60s, want %d: %v", id, len(e.commands(saga, id)), n, e.commands(saga, id))
}

// walk sends each input once, in turn, waiting after each for the one
// command it makes the checkout send.
func (e *env) walk(saga *app.Saga, id string, inputs ...proto.Message) {
	e.t.Helper()
	for i, in := range inputs {
		e.send(1, in)
		e.waitCommands(saga, id, i+1)
	}
}

func (e *env) waitStatus(saga *app.Saga, id string, want domain.Status) {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if e.status(saga, id) == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("checkout %s: status %s after 60s, want %s", id, e.status(saga, id), want)
}

// drain waits until the consumer's checkpoints reach the end of every
// input partition: every record produced so far has been applied.
func (e *env) drain() {
	e.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ends, err := e.adm.ListEndOffsets(ctx, e.topics()...)
		if err != nil {
			e.t.Fatal(err)
		}
		behind := false
		ends.Each(func(o kadm.ListedOffset) {
			if o.Offset == 0 {
				return
			}
			var next int64
			err := e.st.Pool().QueryRow(ctx, `SELECT coalesce(max(next_offset), 0) FROM consumer_checkpoints WHERE group_id = $1 AND topic = $2 AND partition = $3`,
				e.group, o.Topic, o.Partition).Scan(&next)
			if err != nil || next < o.Offset {
				behind = true
			}
		})
		if !behind {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatal("consumer did not reach the end of its topics in 60s")
}

func eur(n int64) *typesv1.Money { return &typesv1.Money{AmountMinor: n, Currency: "EUR"} }

func request(id string) *cartsv1.CheckoutRequested {
	return &cartsv1.CheckoutRequested{CartId: "cart-" + id, CheckoutId: id, CartVersion: 3,
		Lines:         []*cartsv1.CartLine{{Sku: "A", Name: "a", Quantity: 2, UnitPrice: eur(100), LineTotal: eur(200)}},
		Totals:        &typesv1.Totals{Subtotal: eur(200), Total: eur(200)},
		Customer:      &typesv1.Customer{CustomerId: "cu"},
		PaymentMethod: &typesv1.PaymentMethod{Kind: typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_CARD, Token: "tok"}}
}

func placed(id string) *ordersv1.OrderPlaced {
	return &ordersv1.OrderPlaced{OrderId: domain.OrderID(id), CheckoutId: id}
}
func allocated(id string) *stockv1.OrderAllocated {
	return &stockv1.OrderAllocated{OrderId: domain.OrderID(id), CheckoutId: id,
		Lines: []*stockv1.AllocatedLine{{Sku: "A", WarehouseId: "w1", Quantity: 2, ReservationId: "r-" + id}}}
}
func allocFailed(id string) *stockv1.AllocationFailed {
	return &stockv1.AllocationFailed{OrderId: domain.OrderID(id), CheckoutId: id}
}
func authorized(id string) *paymentsv1.PaymentAuthorized {
	return &paymentsv1.PaymentAuthorized{PaymentId: domain.PaymentID(id), OrderId: domain.OrderID(id), CheckoutId: id}
}
func declined(id string) *paymentsv1.PaymentDeclined {
	return &paymentsv1.PaymentDeclined{PaymentId: domain.PaymentID(id), OrderId: domain.OrderID(id), CheckoutId: id}
}
func confirmed(id string) *ordersv1.OrderConfirmed {
	return &ordersv1.OrderConfirmed{OrderId: domain.OrderID(id)}
}
func paid(id string) *ordersv1.OrderPaid {
	return &ordersv1.OrderPaid{OrderId: domain.OrderID(id), PaymentId: domain.PaymentID(id), Amount: eur(200)}
}
func committed(id string) *stockv1.ReservationCommitted {
	return &stockv1.ReservationCommitted{ReservationId: "r-" + id, OrderId: domain.OrderID(id)}
}
func captured(id string) *paymentsv1.PaymentCaptured {
	return &paymentsv1.PaymentCaptured{PaymentId: domain.PaymentID(id), OrderId: domain.OrderID(id)}
}
func cancelled(id string) *ordersv1.OrderCancelled {
	return &ordersv1.OrderCancelled{OrderId: domain.OrderID(id)}
}
func released(id string) *stockv1.ReservationReleased {
	return &stockv1.ReservationReleased{ReservationId: "r-" + id, OrderId: domain.OrderID(id)}
}

func cmds(id string, names ...string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		kind, suffix, _ := strings.Cut(n, " ")
		out[i] = kind + " " + id + ":" + suffix
	}
	return out
}

// TestFlowsDuplicatedAndReordered drives a completed, a declined and an
// out-of-stock checkout through the real broker, every event delivered
// twice, confirmations and compensations in reverse order, stale events
// redelivered late: each outbox holds exactly the expected commands, once.
func TestFlowsDuplicatedAndReordered(t *testing.T) {
	e := newEnv(t)
	saga, _ := e.start()
	ok, dec, oos := "ok"+ksuid.New().String(), "dec"+ksuid.New().String(), "oos"+ksuid.New().String()

	e.send(2, request(ok), request(dec), request(oos))
	for _, id := range []string{ok, dec, oos} {
		e.waitCommands(saga, id, 1)
	}
	e.send(2, placed(ok), placed(dec), placed(oos))
	for _, id := range []string{ok, dec, oos} {
		e.waitCommands(saga, id, 2)
	}
	e.send(2, allocated(ok), allocated(dec), allocFailed(oos))
	e.waitCommands(saga, ok, 3)
	e.waitCommands(saga, dec, 3)
	e.waitCommands(saga, oos, 3)
	e.send(2, authorized(ok), declined(dec), cancelled(oos), placed(oos), request(oos))
	e.waitCommands(saga, ok, 6)
	e.waitCommands(saga, dec, 6)
	e.send(2, captured(ok), committed(ok), authorized(ok), released(dec), cancelled(dec), allocated(ok))
	e.send(1, confirmed(ok), confirmed(ok), declined(dec), placed(dec))
	e.waitCommands(saga, ok, 7) // confirmed and captured: the order is marked paid
	if st := e.status(saga, ok); st != domain.StatusConfirming {
		t.Errorf("checkout %s before its order is paid: status %s, want confirming", ok, st)
	}
	e.send(2, paid(ok))
	e.waitStatus(saga, ok, domain.StatusCompleted)
	e.waitStatus(saga, dec, domain.StatusFailed)
	e.waitStatus(saga, oos, domain.StatusFailed)
	// Everything once more, after the end: nothing new.
	e.send(2, request(ok), placed(ok), allocated(ok), authorized(ok), confirmed(ok), committed(ok), captured(ok), paid(ok),
		request(dec), declined(dec), cancelled(dec), released(dec), allocFailed(oos), cancelled(oos))
	e.drain()

	want := map[string][]string{
		ok: cmds(ok, "PlaceOrder place-order", "ReserveStock reserve-stock", "AuthorizePayment authorize-payment",
			"ConfirmOrder confirm-order", "CommitReservation commit-stock", "CapturePayment capture-payment",
			"MarkOrderPaid mark-order-paid", "CloseCart close-cart"),
		dec: cmds(dec, "PlaceOrder place-order", "ReserveStock reserve-stock", "AuthorizePayment authorize-payment",
			"VoidPayment void-payment", "ReleaseReservation release-stock", "CancelOrder cancel-order", "ReopenCart reopen-cart"),
		oos: cmds(oos, "PlaceOrder place-order", "ReserveStock reserve-stock",
			"CancelOrder cancel-order", "ReopenCart reopen-cart"),
	}
	for id, w := range want {
		if diff := cmp.Diff(w, e.commands(saga, id)); diff != "" {
			t.Errorf("checkout %s outbox (-want +got):\n%s", id, diff)
		}
	}
	c, _, err := saga.Get(context.Background(), dec)
	if err != nil {
		t.Fatal(err)
	}
	if v := c.View(); v.FailureReason != "payment_declined" || v.Steps[1].CompensatedAt == nil {
		t.Errorf("declined view: %+v", v)
	}
	checkLogOrder(t, e.st)
	var timers int
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM checkout_timers`).Scan(&timers); err != nil {
		t.Fatal(err)
	}
	if timers != 0 {
		t.Errorf("%d timers left after every checkout ended", timers)
	}
}

// TestPaymentTimeoutThenLateAuthorization moves the clock past the payment
// deadline: the timer fires once, the saga compensates, and an
// authorization arriving after the checkout failed is voided, once.
func TestPaymentTimeoutThenLateAuthorization(t *testing.T) {
	e := newEnv(t)
	saga, _ := e.start()
	ctx := context.Background()
	id := "pto" + ksuid.New().String()
	e.walk(saga, id, request(id), placed(id), allocated(id))

	e.clock.Add(domain.DefaultPaymentTimeout - time.Second)
	if n, err := saga.FireDue(ctx); err != nil || n != 0 {
		t.Fatalf("before the deadline: fired %d, %v", n, err)
	}
	e.clock.Add(2 * time.Second)
	if n, err := saga.FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("at the deadline: fired %d, %v; want 1", n, err)
	}
	if n, err := saga.FireDue(ctx); err != nil || n != 0 {
		t.Fatalf("again: fired %d, %v; want 0", n, err)
	}
	if st := e.status(saga, id); st != domain.StatusCompensating {
		t.Fatalf("status %s, want compensating", st)
	}
	e.send(2, cancelled(id), released(id))
	e.waitStatus(saga, id, domain.StatusFailed)
	e.send(2, authorized(id)) // the provider answered after all
	e.waitCommands(saga, id, 8)
	e.clock.Add(domain.DefaultCheckoutTimeout)
	if n, err := saga.FireDue(ctx); err != nil || n != 0 {
		t.Fatalf("checkout timer after the end: fired %d, %v; want 0", n, err)
	}
	e.drain()
	want := cmds(id, "PlaceOrder place-order", "ReserveStock reserve-stock", "AuthorizePayment authorize-payment",
		"VoidPayment void-payment", "ReleaseReservation release-stock", "CancelOrder cancel-order", "ReopenCart reopen-cart",
		"VoidPayment void-payment-late")
	if diff := cmp.Diff(want, e.commands(saga, id)); diff != "" {
		t.Errorf("outbox (-want +got):\n%s", diff)
	}
	c, _, _ := saga.Get(ctx, id)
	if v := c.View(); !v.TimedOut || v.FailureReason != "payment_timed_out" {
		t.Errorf("view %+v", v)
	}
}

// TestUnansweredAuthorizationAfterTheCheckoutFailed: the saga's payment
// timer fires while the authorization is still on its way; the provider
// then leaves it unanswered (maybe charged) twice, after the checkout has
// failed. Each answer is reconciled once (duplicates included): asked again
// at once, then by a durable timer after the back-off on the moved clock;
// the charge it finds is voided and the pending timer goes.
func TestUnansweredAuthorizationAfterTheCheckoutFailed(t *testing.T) {
	e := newEnv(t)
	saga, _ := e.start()
	ctx := context.Background()
	id := "una" + ksuid.New().String()
	e.walk(saga, id, request(id), placed(id), allocated(id))
	e.clock.Add(domain.DefaultPaymentTimeout + time.Second)
	if n, err := saga.FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("payment timer: fired %d, %v; want 1", n, err)
	}
	e.send(2, cancelled(id), released(id))
	e.waitStatus(saga, id, domain.StatusFailed)

	silence := func(at time.Time) *paymentsv1.PaymentAuthorizationTimedOut {
		return &paymentsv1.PaymentAuthorizationTimedOut{PaymentId: domain.PaymentID(id), OrderId: domain.OrderID(id),
			CheckoutId: id, TimedOutAt: timestamppb.New(at)}
	}
	first := e.clock.Now()
	e.send(2, silence(first))
	e.waitCommands(saga, id, 8)
	e.send(2, silence(first.Add(time.Second)))
	e.drain()
	var due time.Time
	if err := saga.Pool().QueryRow(ctx, `SELECT due_at FROM checkout_timers WHERE checkout_id = $1 AND kind = $2`,
		id, string(domain.TimerResolve)).Scan(&due); err != nil {
		t.Fatalf("resolve timer: %v", err)
	}
	if want := e.clock.Now().Add(domain.DefaultResolveBackoff); due.Sub(want).Abs() > time.Second {
		t.Fatalf("resolve timer due %s, want about %s", due, want)
	}
	if n, err := saga.FireDue(ctx); err != nil || n != 0 {
		t.Fatalf("before the back-off: fired %d, %v", n, err)
	}
	e.clock.Add(domain.DefaultResolveBackoff + time.Second)
	if n, err := saga.FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("after the back-off: fired %d, %v; want 1", n, err)
	}
	e.send(2, authorized(id)) // the second question found the charge
	e.waitCommands(saga, id, 10)
	e.drain()
	want := cmds(id, "PlaceOrder place-order", "ReserveStock reserve-stock", "AuthorizePayment authorize-payment",
		"VoidPayment void-payment", "ReleaseReservation release-stock", "CancelOrder cancel-order", "ReopenCart reopen-cart",
		"AuthorizePayment authorize-payment-resolve", "AuthorizePayment authorize-payment-resolve-2", "VoidPayment void-payment-late")
	if diff := cmp.Diff(want, e.commands(saga, id)); diff != "" {
		t.Errorf("outbox (-want +got):\n%s", diff)
	}
	var timers int
	if err := saga.Pool().QueryRow(ctx, `SELECT count(*) FROM checkout_timers WHERE checkout_id = $1`, id).Scan(&timers); err != nil || timers != 0 {
		t.Errorf("%d timers left (%v)", timers, err)
	}
	c, _, _ := saga.Get(ctx, id)
	if r := c.View().PaymentReconciliation; r == nil || r.Attempts != 2 || r.GivenUp {
		t.Errorf("view's reconciliation %+v, want 2 attempts", r)
	}
}

// TestFailingTimerDoesNotStallOthers: a timer of a checkout whose stream
// holds an event no version of the saga decodes fails on every attempt; it
// is due before another checkout's deadline, which fires all the same,
// while the failing one is backed off, not dropped.
func TestFailingTimerDoesNotStallOthers(t *testing.T) {
	e := newEnv(t)
	saga, _ := e.start()
	ctx := context.Background()
	bad := "bad" + ksuid.New().String()
	if _, err := e.st.Append(ctx, app.Stream(bad), store.Any, []envelope.Event{{ID: ksuid.New(), Type: "keel.checkout.v1.FromTheFuture", Payload: []byte{0xff}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := saga.Pool().Exec(ctx, `INSERT INTO checkout_timers (checkout_id, kind, due_at) VALUES ($1, $2, $3)`,
		bad, string(domain.TimerCheckout), e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	id := "ok" + ksuid.New().String()
	e.send(1, request(id))
	e.waitCommands(saga, id, 1)
	e.clock.Add(domain.DefaultCheckoutTimeout)
	if n, err := saga.FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("fired %d, %v; want the other checkout's deadline", n, err)
	}
	if st := e.status(saga, id); st != domain.StatusFailed {
		t.Fatalf("status %s, want failed", st)
	}
	var attempts int
	var retryAt time.Time
	if err := saga.Pool().QueryRow(ctx, `SELECT attempts, retry_at FROM checkout_timers WHERE checkout_id = $1`, bad).Scan(&attempts, &retryAt); err != nil {
		t.Fatal(err)
	}
	if attempts != 1 || !retryAt.After(e.clock.Now()) {
		t.Fatalf("failing timer: %d attempts, retry at %s (now %s)", attempts, retryAt, e.clock.Now())
	}
}

// TestCheckoutDeadline: an order never placed; the checkout deadline ends
// the checkout at once (nothing was done to wait for).
func TestCheckoutDeadline(t *testing.T) {
	e := newEnv(t)
	saga, _ := e.start()
	ctx := context.Background()
	id := "dl" + ksuid.New().String()
	e.send(1, request(id))
	e.waitCommands(saga, id, 1)
	e.clock.Add(domain.DefaultCheckoutTimeout)
	if n, err := saga.FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("fired %d, %v; want 1", n, err)
	}
	if st := e.status(saga, id); st != domain.StatusFailed {
		t.Fatalf("status %s, want failed", st)
	}
	want := cmds(id, "PlaceOrder place-order", "CancelOrder cancel-order", "ReopenCart reopen-cart")
	if diff := cmp.Diff(want, e.commands(saga, id)); diff != "" {
		t.Errorf("outbox (-want +got):\n%s", diff)
	}
}

// TestOutOfStockFailsFast: the stock service's AllocationFailed turns the
// checkout back at once, with the clock standing still (no timer fires):
// the order is cancelled as out of stock, nothing is released (nothing was
// reserved), and the confirmed cancellation ends it with the cart reopened
// and no timer left.
func TestOutOfStockFailsFast(t *testing.T) {
	e := newEnv(t)
	saga, _ := e.start()
	ctx := context.Background()
	id := "oos" + ksuid.New().String()
	e.walk(saga, id, request(id), placed(id), &stockv1.AllocationFailed{OrderId: domain.OrderID(id), CheckoutId: id,
		Shortages: []*stockv1.Shortage{{Sku: "A", Requested: 2, Available: 0}}})
	if st := e.status(saga, id); st != domain.StatusCompensating {
		t.Fatalf("status %s, want compensating", st)
	}
	out, err := saga.Commands(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := out[2].(*ordersv1.CancelOrder); !ok || c.GetReason() != ordersv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK {
		t.Fatalf("third command %v, want CancelOrder as out of stock", out[2])
	}
	e.send(1, cancelled(id))
	e.waitStatus(saga, id, domain.StatusFailed)
	want := cmds(id, "PlaceOrder place-order", "ReserveStock reserve-stock", "CancelOrder cancel-order", "ReopenCart reopen-cart")
	if diff := cmp.Diff(want, e.commands(saga, id)); diff != "" {
		t.Errorf("outbox (-want +got):\n%s", diff)
	}
	c, _, err := saga.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if v := c.View(); v.FailureReason != "out_of_stock" || v.FailureDetail != "A requested 2 available 0" || v.TimedOut {
		t.Errorf("view: reason %q, detail %q, timed out %v", v.FailureReason, v.FailureDetail, v.TimedOut)
	}
	var timers int
	if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FROM checkout_timers WHERE checkout_id = $1`, id).Scan(&timers); err != nil {
		t.Fatal(err)
	}
	if timers != 0 {
		t.Errorf("%d timers left after the checkout failed", timers)
	}
}

// TestRestart stops the process manager mid-flow, feeds an event while
// none runs, and starts a new one on the same database: it picks up from
// its checkpoint, and a timer armed by the first fires in the second.
func TestRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	saga1, stop1 := e.start()
	id := "rs" + ksuid.New().String()
	e.send(2, request(id))
	e.waitCommands(saga1, id, 1)
	e.send(2, placed(id))
	e.waitCommands(saga1, id, 2)
	stop1()

	// While no saga runs, the stock service's per-line events (the
	// reservation is all or nothing, so the first line proves it).
	e.send(2, &stockv1.StockReserved{ReservationId: "r1-" + id, Sku: "A", OrderId: domain.OrderID(id), CheckoutId: id},
		&stockv1.StockReserved{ReservationId: "r2-" + id, Sku: "B", OrderId: domain.OrderID(id), CheckoutId: id})
	saga2, _ := e.start()
	e.waitCommands(saga2, id, 3)
	e.clock.Add(domain.DefaultPaymentTimeout)
	if n, err := saga2.FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("fired %d, %v; want 1", n, err)
	}
	e.send(2, released(id), cancelled(id))
	e.waitStatus(saga2, id, domain.StatusFailed)
	e.drain()
	want := cmds(id, "PlaceOrder place-order", "ReserveStock reserve-stock", "AuthorizePayment authorize-payment",
		"VoidPayment void-payment", "ReleaseReservation release-stock", "CancelOrder cancel-order", "ReopenCart reopen-cart")
	if diff := cmp.Diff(want, e.commands(saga2, id)); diff != "" {
		t.Errorf("outbox (-want +got):\n%s", diff)
	}
}

// TestPoisonDoesNotBlock: a record that is not a Keel event and an invalid
// checkout request are dead-lettered; the checkout behind them proceeds.
func TestPoisonDoesNotBlock(t *testing.T) {
	e := newEnv(t)
	saga, _ := e.start()
	topic := e.prefix + topics.Events("carts")
	bad := request("bad" + ksuid.New().String())
	bad.Lines = nil
	e.send(1, bad)
	ctx := context.Background()
	if err := e.cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("x"), Value: []byte("garbage")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	id := "ok" + ksuid.New().String()
	e.send(1, request(id))
	e.waitCommands(saga, id, 1)
	e.drain()
	ends, err := e.adm.ListEndOffsets(ctx, topics.DLQ(topic))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	if n != 2 {
		t.Errorf("%d dead letters, want 2", n)
	}
}

// TestRelayRoutesTheStore runs the relay with Route over the saga's store:
// the saga's events reach checkout.events, each command its context's
// commands topic, keyed by the checkout's outbox stream.
func TestRelayRoutesTheStore(t *testing.T) {
	e := newEnv(t)
	saga, _ := e.start()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out := []string{e.prefix + "checkout.events", e.prefix + "orders.commands", e.prefix + "carts.commands"}
	var specs []topics.Spec
	for _, tp := range []string{"checkout.events", "orders.commands", "stock.commands", "payments.commands", "carts.commands"} {
		specs = append(specs, topics.EventSpec(e.prefix+tp, 3, 1))
	}
	if err := topics.Ensure(ctx, e.adm, specs...); err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	testenv.DeleteTopicsAtEnd(t, names...)
	rel, err := relay.New(relay.Config{Source: e.st, Brokers: brokers(), Topic: out[0], Route: app.Route(e.prefix), EventSource: "keel/checkout"})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	rdone := make(chan error, 1)
	go func() { rdone <- rel.Run(rctx) }()
	defer func() { rcancel(); <-rdone }()

	id := "rl" + ksuid.New().String()
	e.send(1, request(id))
	e.waitCommands(saga, id, 1)
	e.clock.Add(domain.DefaultCheckoutTimeout)
	if n, err := saga.FireDue(ctx); err != nil || n != 1 {
		t.Fatalf("fired %d, %v", n, err)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers()...), kgo.ConsumeTopics(out...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := map[string][]string{}
	want := map[string][]string{
		out[0]: {"keel.checkout.v1.CheckoutStarted", "keel.checkout.v1.CheckoutTimedOut", "keel.checkout.v1.CheckoutCompensating", "keel.checkout.v1.CheckoutFailed"},
		out[1]: {"keel.orders.v1.PlaceOrder", "keel.orders.v1.CancelOrder"},
		out[2]: {"keel.carts.v1.ReopenCart"},
	}
	for n := 0; n < 7; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("got %v, want %v", got, want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			ev, err := wire.Event(r)
			if err != nil {
				t.Fatal(err)
			}
			wantKey := app.Stream(id)
			if r.Topic != out[0] {
				wantKey = app.Outbox(id)
			}
			if string(r.Key) != wantKey {
				t.Errorf("%s on %s: key %q, want %q", ev.Type, r.Topic, r.Key, wantKey)
			}
			got[r.Topic] = append(got[r.Topic], ev.Type)
			n++
		})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("routed (-want +got):\n%s", diff)
	}
}

func TestRoute(t *testing.T) {
	r := app.Route("")
	for typ, want := range map[string]string{
		"keel.checkout.v1.CheckoutStarted":  "checkout.events",
		"keel.stock.v1.ReserveStock":        "stock.commands",
		"keel.orders.v1.PlaceOrder":         "orders.commands",
		"keel.payments.v1.AuthorizePayment": "payments.commands",
		"keel.carts.v1.ReopenCart":          "carts.commands",
	} {
		if got := r(envelope.Event{Type: typ}); got != want {
			t.Errorf("%s → %s, want %s", typ, got, want)
		}
	}
}

// TestChangedWakesOnCommit: a long poll's watch on a checkout is woken when
// this process records the checkout's next events, and not by inputs that
// record nothing; a watch for the end only when the checkout ends.
func TestChangedWakesOnCommit(t *testing.T) {
	e := newEnv(t)
	saga, _ := e.start()
	id := "chg" + ksuid.New().String()
	changed, stop := saga.Changed(id, false)
	defer stop()
	end, stopEnd := saga.Changed(id, true)
	defer stopEnd()
	e.send(1, request(id))
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("no wake-up after the checkout started")
	}
	again, stop2 := saga.Changed(id, false)
	defer stop2()
	e.send(1, request(id)) // a duplicate records nothing
	e.drain()
	select {
	case <-again:
		t.Fatal("woken by a duplicate that recorded nothing")
	case <-end:
		t.Fatal("a watch for the end woken by the start")
	default:
	}
	e.send(1, placed(id), allocFailed(id), cancelled(id)) // out of stock: fails
	select {
	case <-end:
	case <-time.After(30 * time.Second):
		t.Fatal("a watch for the end not woken by the failure")
	}
}
