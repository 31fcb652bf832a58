package app_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/envelope"
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
	return &direct{t: t, saga: saga, clock: c, reg: codec.All()}
}

func (d *direct) deliver(m proto.Message) error {
	typ, payload, err := d.reg.Encode(m)
	if err != nil {
		return err
	}
	rec := wire.Record("x", "keel/test", envelope.Event{ID: ksuid.New(), Type: typ, StreamID: "s", Version: 1, Payload: payload, RecordedAt: time.Now()})
	return pgx.BeginFunc(context.Background(), d.saga.Pool(), func(tx pgx.Tx) error { return d.saga.Handle(context.Background(), tx, rec) })
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
}
