package app_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	checkoutv1 "github.com/keel-commerce/keel/events/checkout/v1"
	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/envelope"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/events/wire"
	"github.com/keel-commerce/keel/services/checkout/app"
	"github.com/keel-commerce/keel/services/checkout/domain"
)

// direct is a saga driven without Kafka: each delivery is its own
// transaction, as the consumer's would be.
type direct struct {
	t     *testing.T
	st    *pg.Store
	saga  *app.Saga
	clock *clock
	reg   *codec.Registry
}

func newDirect(t *testing.T) *direct {
	t.Helper()
	ctx := context.Background()
	pool := testenv.Pool(t)
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	saga, err := app.New(ctx, app.Config{Store: st, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &direct{t: t, st: st, saga: saga, clock: c, reg: codec.All()}
}

func (d *direct) deliver(m proto.Message) error {
	typ, payload, err := d.reg.Encode(m)
	if err != nil {
		return err
	}
	rec := wire.Record("x", "keel/test", envelope.Event{ID: ksuid.New(), Type: typ, StreamID: "s", Version: 1, Payload: payload, RecordedAt: time.Now()})
	// Handle runs its own transaction; the consumer's (nil here) only
	// carries the checkpoint. Holding one per delivery as well would need
	// two connections per delivery: the pool must allow for that (see
	// cmd/checkout).
	return d.saga.Handle(context.Background(), nil, rec)
}

func (d *direct) mustDeliver(ms ...proto.Message) {
	d.t.Helper()
	for _, m := range ms {
		if err := d.deliver(m); err != nil {
			d.t.Fatal(err)
		}
	}
}

func (d *direct) kinds(id string) string {
	d.t.Helper()
	cmds, err := d.saga.Commands(context.Background(), id)
	if err != nil {
		d.t.Fatal(err)
	}
	var out []string
	for _, c := range cmds {
		f := c.ProtoReflect().Descriptor().Fields().ByName("command_id")
		out = append(out, strings.TrimPrefix(c.ProtoReflect().Get(f).String(), id+":"))
	}
	return strings.Join(out, " ")
}

// checkLogOrder reads the store's whole log as the relay does and checks
// that every stream's events come in version order, without gaps: what the
// relay publishes per key is what each checkout decided, in order.
func checkLogOrder(t *testing.T, st *pg.Store) {
	t.Helper()
	next := map[string]int64{}
	var after envelope.Position
	for {
		evs, err := st.ReadAll(context.Background(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			if want := next[e.StreamID] + 1; e.Version != want {
				t.Errorf("log order: %s v%d at %s, want v%d", e.StreamID, e.Version, e.Position, want)
			}
			next[e.StreamID] = e.Version
			after = e.Position
		}
	}
	if len(next) == 0 {
		t.Error("log order: empty log")
	}
}

// Eight deliveries of the same event race in eight transactions, for
// twenty checkouts at once: each checkout takes the step exactly once.
func TestRaceDuplicateDeliveries(t *testing.T) {
	d := newDirect(t)
	var ids []string
	for i := range 20 {
		id := fmt.Sprintf("race%02d%s", i, ksuid.New())
		ids = append(ids, id)
		d.mustDeliver(request(id))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20*8)
	for _, id := range ids {
		for range 8 {
			wg.Go(func() { errs <- d.deliver(placed(id)) })
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for _, id := range ids {
		if got := d.kinds(id); got != "place-order reserve-stock" {
			t.Errorf("%s: commands %q, want one reserve", id, got)
		}
	}
	checkLogOrder(t, d.st)
}

// The payment timer and the authorization race for each of twenty
// checkouts: exactly one wins. Either the checkout confirms (the timer
// finds nothing to do), or it compensates and the authorization, now late,
// is voided once.
func TestRaceTimerAgainstAuthorization(t *testing.T) {
	d := newDirect(t)
	var ids []string
	for i := range 20 {
		id := fmt.Sprintf("tmr%02d%s", i, ksuid.New())
		ids = append(ids, id)
		d.mustDeliver(request(id), placed(id), allocated(id))
	}
	d.clock.Add(domain.DefaultPaymentTimeout)
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := d.saga.FireDue(context.Background()); err != nil {
			t.Error(err)
		}
	})
	for _, id := range ids {
		wg.Go(func() {
			if err := d.deliver(authorized(id)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if _, err := d.saga.FireDue(context.Background()); err != nil { // whatever the race left
		t.Fatal(err)
	}
	const head = "place-order reserve-stock authorize-payment "
	confirmedN, compensatedN := 0, 0
	for _, id := range ids {
		switch got := d.kinds(id); got {
		case head + "confirm-order commit-stock capture-payment":
			confirmedN++
		case head + "void-payment release-stock cancel-order void-payment-late":
			compensatedN++
		default:
			t.Errorf("%s: commands %q", id, got)
		}
	}
	t.Logf("confirmed %d, compensated %d", confirmedN, compensatedN)
	checkLogOrder(t, d.st)
}

// The consumer's transaction is not the saga's: what Handle decided stays
// when the consumer rolls its batch back (the record then comes again and
// is a no-op, see TestFlowsDuplicatedAndReordered).
func TestHandleCommitsOnItsOwn(t *testing.T) {
	d := newDirect(t)
	ctx := context.Background()
	id := "own" + ksuid.New().String()
	typ, payload, err := d.reg.Encode(request(id))
	if err != nil {
		t.Fatal(err)
	}
	rec := wire.Record("x", "keel/test", envelope.Event{ID: ksuid.New(), Type: typ, StreamID: "s", Version: 1, Payload: payload, RecordedAt: time.Now()})
	tx, err := d.saga.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.saga.Handle(ctx, tx, rec); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := d.kinds(id); got != "place-order" {
		t.Errorf("commands %q after the consumer's rollback, want place-order", got)
	}
	if err := d.deliver(request(id)); err != nil {
		t.Fatal(err)
	}
	if got := d.kinds(id); got != "place-order" {
		t.Errorf("commands %q after redelivery, want place-order once", got)
	}
}

// Four batches race, each holding every one of twenty checkouts (their
// authorizations and order confirmations, in its own shuffled order), in
// four consumer transactions: each checkout takes each step exactly once,
// the store's log keeps every stream in version order (the batch locks
// all its checkouts before its first write), and nothing deadlocks. What a
// batch recorded wakes its waiters only once Finished says it committed;
// a rolled-back batch leaves nothing.
func TestRaceBatches(t *testing.T) {
	d := newDirect(t)
	ctx := context.Background()
	var ids []string
	for i := range 20 {
		id := fmt.Sprintf("bat%02d%s", i, ksuid.New().String())
		ids = append(ids, id)
		d.mustDeliver(request(id), placed(id), allocated(id))
	}
	record := func(m proto.Message) *kgo.Record {
		typ, payload, err := d.reg.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		return wire.Record("x", "keel/test", envelope.Event{ID: ksuid.New(), Type: typ, StreamID: "s", Version: 1, Payload: payload, RecordedAt: time.Now()})
	}
	batch := func(recs ...*kgo.Record) (pgx.Tx, error) {
		tx, err := d.saga.Pool().Begin(ctx)
		if err != nil {
			return nil, err
		}
		if err := d.saga.HandleBatch(ctx, tx, recs); err != nil {
			_ = tx.Rollback(ctx)
			d.saga.Finished(tx, false)
			return nil, err
		}
		return tx, nil
	}

	// What a batch recorded wakes waiters only once it has committed.
	changed, stop := d.saga.Changed(ids[0], false)
	defer stop()
	tx, err := batch(record(authorized(ids[0])))
	if err != nil {
		t.Fatal(err)
	}
	woken := func() bool {
		select {
		case <-changed:
			return true
		default:
			return false
		}
	}
	if woken() {
		t.Fatal("waiters woken before the batch committed")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	d.saga.Finished(tx, false)
	if woken() || d.kinds(ids[0]) != "place-order reserve-stock authorize-payment" {
		t.Fatalf("rolled-back batch: woken %v, commands %q", woken(), d.kinds(ids[0]))
	}

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for b := range 4 {
		rng := rand.New(rand.NewPCG(uint64(b), 7))
		var recs []*kgo.Record
		for _, i := range rng.Perm(len(ids)) {
			recs = append(recs, record(authorized(ids[i])), record(confirmed(ids[i])))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tx, err := batch(recs...)
			if err == nil {
				err = tx.Commit(ctx)
				d.saga.Finished(tx, err == nil)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if !woken() {
		t.Error("waiters not woken after the batches committed")
	}
	for _, id := range ids {
		if got, want := d.kinds(id), "place-order reserve-stock authorize-payment confirm-order commit-stock capture-payment"; got != want {
			t.Errorf("%s: commands %q, want %q", id, got, want)
		}
	}
	checkLogOrder(t, d.st)
}

func TestTransition(t *testing.T) {
	for ev, want := range map[proto.Message]string{
		&checkoutv1.CheckoutStarted{}: "started",
		&checkoutv1.CheckoutStepCompleted{Step: checkoutv1.Step_STEP_RESERVE_STOCK}:       "step:reserve_stock",
		&checkoutv1.CheckoutCompensating{}:                                                "compensating",
		&checkoutv1.CheckoutStepCompensated{Step: checkoutv1.Step_STEP_AUTHORIZE_PAYMENT}: "compensated:authorize_payment",
		&checkoutv1.CheckoutTimedOut{}:                                                    "timed_out",
		&checkoutv1.CheckoutCompleted{}:                                                   "completed",
		&checkoutv1.CheckoutFailed{}:                                                      "failed",
		&checkoutv1.CheckoutPaymentReconciling{}:                                          "payment_reconciling",
		&ordersv1.OrderPlaced{}:                                                           "",
	} {
		if got := app.Transition(ev); got != want {
			t.Errorf("%T: %q, want %q", ev, got, want)
		}
	}
}
