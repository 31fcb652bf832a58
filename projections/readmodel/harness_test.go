package readmodel_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/consume"
	"github.com/keel-commerce/keel/events/envelope"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"github.com/keel-commerce/keel/events/relay"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/projections/readmodel"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// harness is the read side on the real stack: an event store per source
// context, its relay to a fresh topic, and a projections database.
type harness struct {
	t       *testing.T
	proj    *pgxpool.Pool
	reg     *codec.Registry
	sources map[string]*source
}

type source struct {
	name  string
	st    *pg.Store
	topic string
}

func newHarness(t *testing.T, contexts ...string) *harness {
	t.Helper()
	h := &harness{t: t, proj: testenv.Pool(t), reg: codec.All(), sources: map[string]*source{}}
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	t.Cleanup(func() { cancel(); running.Wait() })
	var relays []*relay.Relay
	for _, c := range contexts {
		st, err := pg.New(ctx, testenv.Pool(t), pg.Options{})
		testenv.Must(t, err, "store")
		t.Cleanup(st.Close)
		topic := testenv.Topic(t, 4)
		testenv.CreateTopics(t, 1, topic+consume.DefaultDLQSuffix)
		h.sources[c] = &source{name: c, st: st, topic: topic}
		rl, err := relay.New(relay.Config{Source: st, Brokers: testenv.KafkaBrokers(), Topic: topic, EventSource: "keel/" + c,
			TransactionalID: testenv.Name("relay")})
		testenv.Must(t, err, "relay")
		relays = append(relays, rl)
	}
	for _, rl := range relays {
		running.Go(func() {
			if err := rl.Run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("relay: %v", err)
			}
		})
	}
	return h
}

func (h *harness) topicOf(ctx string) string { return h.sources[ctx].topic }

func (h *harness) stores() map[string]*pg.Store {
	out := map[string]*pg.Store{}
	for c, s := range h.sources {
		out[c] = s.st
	}
	return out
}

// runBuilders runs the live builders of ps until the test ends.
func (h *harness) runBuilders(ps ...readmodel.Projection) {
	h.t.Helper()
	for _, p := range ps {
		_, err := readmodel.EnsureActive(context.Background(), h.proj, p)
		testenv.Must(h.t, err, "ensure active copy")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	group := testenv.Name("g")
	go func() {
		done <- readmodel.RunBuilders(ctx, readmodel.RunConfig{Brokers: testenv.KafkaBrokers(), Pool: h.proj, TopicOf: h.topicOf,
			GroupOf:   func(p string) string { return group + "." + p },
			KafkaOpts: []kgo.Opt{kgo.HeartbeatInterval(200 * time.Millisecond), kgo.SessionTimeout(6 * time.Second)}}, ps...)
	}()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("builders: %v", err)
		}
	})
}

// appendEvents appends msgs to stream at version expected; safe to call
// from any goroutine (it reports, never stops the test).
func (h *harness) appendEvents(ctx context.Context, src, stream string, expected int64, at time.Time, msgs ...proto.Message) bool {
	evs := make([]envelope.Event, len(msgs))
	for i, m := range msgs {
		typ, payload, err := h.reg.Encode(m)
		if err != nil {
			h.t.Errorf("encode: %v", err)
			return false
		}
		evs[i] = envelope.Event{ID: ksuid.New(), Type: typ, StreamID: stream, Payload: payload, RecordedAt: at}
	}
	if _, err := h.sources[src].st.Append(ctx, stream, store.Exact(expected), evs); err != nil {
		h.t.Errorf("append to %s: %v", stream, err)
		return false
	}
	return true
}

// streamVersions is every stream's version in a source store.
func streamVersions(ctx context.Context, t *testing.T, st *pg.Store) map[string]int64 {
	t.Helper()
	rows, err := st.Pool().Query(ctx, `SELECT stream_id, max(version) FROM events GROUP BY stream_id`)
	testenv.Must(t, err, "stream versions")
	out := map[string]int64{}
	var s string
	var v int64
	_, err = pgx.ForEachRow(rows, []any{&s, &v}, func() error { out[s] = v; return nil })
	testenv.Must(t, err, "stream versions")
	return out
}

// waitCaughtUp waits until p's active copy has applied every stream of its
// sources to the stores' versions.
func (h *harness) waitCaughtUp(p readmodel.Projection) {
	h.t.Helper()
	ctx := context.Background()
	want := map[string]int64{}
	for _, src := range p.Sources() {
		for s, v := range streamVersions(ctx, h.t, h.sources[src].st) {
			want[s] = v
		}
	}
	deadline := time.Now().Add(catchUpTimeout())
	for {
		g, err := readmodel.Active(ctx, h.proj, p.Name())
		if err == nil {
			var behind int
			err = h.proj.QueryRow(ctx, `SELECT $1::int - count(*) FROM jsonb_each_text($2::jsonb) w
JOIN `+pgx.Identifier{g.Schema, "applied_streams"}.Sanitize()+` a ON a.stream_id = w.key AND a.version = w.value::bigint`,
				len(want), want).Scan(&behind)
			if err == nil && behind == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("projection %s did not catch up with %d streams in time (last error %v)", p.Name(), len(want), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dump is every row of every table of a copy, as text, sorted.
func (h *harness) dump(schema string, p readmodel.Projection) map[string][]string {
	h.t.Helper()
	out := map[string][]string{}
	for _, def := range append(p.Tables(), &readmodel.TableDef{Name: "applied_streams"}) {
		rows, err := h.proj.Query(context.Background(), `SELECT t::text FROM `+pgx.Identifier{schema, def.Name}.Sanitize()+` t ORDER BY 1`)
		testenv.Must(h.t, err, "dump %s", def.Name)
		list, err := pgx.CollectRows(rows, pgx.RowTo[string])
		testenv.Must(h.t, err, "dump %s", def.Name)
		out[def.Name] = list
	}
	return out
}

// sameRows fails the test with the first differences of two dumps.
func sameRows(t *testing.T, what string, want, got map[string][]string) {
	t.Helper()
	for table, w := range want {
		g := got[table]
		if slices.Equal(w, g) {
			continue
		}
		var diffs []string
		ws, gs := map[string]bool{}, map[string]bool{}
		for _, r := range w {
			ws[r] = true
		}
		for _, r := range g {
			gs[r] = true
			if !ws[r] && len(diffs) < 5 {
				diffs = append(diffs, "+ "+r)
			}
		}
		for _, r := range w {
			if !gs[r] && len(diffs) < 10 {
				diffs = append(diffs, "- "+r)
			}
		}
		t.Errorf("%s: table %s: %d rows vs %d rows; first differences:\n%s", what, table, len(w), len(g), strings.Join(diffs, "\n"))
	}
}

// orderWorkload appends n orders with mixed lives (placed; confirmed, paid,
// shipped; or cancelled on the way) to the orders store, appenders in
// parallel; it returns how many events it wrote.
func (h *harness) orderWorkload(ctx context.Context, n int, seed uint64) int {
	h.t.Helper()
	const writers = 8
	counts := make(chan int, writers)
	for w := range writers {
		go func() {
			rnd := rand.New(rand.NewPCG(seed, uint64(w)))
			total := 0
			for i := w; i < n; i += writers {
				// The tail of a KSUID is random (its head is the time).
				msgs := orderLife(rnd, fmt.Sprintf("o%d-%s", i, ksuid.New().String()[17:]), i)
				if h.appendEvents(ctx, "orders", "order-"+msgs[0].(*ordersv1.OrderPlaced).GetOrderId(), 0, time.Now(), msgs...) {
					total += len(msgs)
				}
			}
			counts <- total
		}()
	}
	total := 0
	for range writers {
		total += <-counts
	}
	return total
}

var base = time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)

func orderLife(rnd *rand.Rand, id string, i int) []proto.Message {
	placed := base.Add(time.Duration(i) * 7 * time.Second)
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(placed.Add(d)) }
	var lines []*ordersv1.OrderLine
	var total int64
	for l := range 1 + rnd.IntN(4) {
		q, price := int64(1+rnd.IntN(3)), int64(100+rnd.IntN(5000))
		lines = append(lines, &ordersv1.OrderLine{Sku: fmt.Sprintf("SKU-%03d", (l*31+rnd.IntN(200))%200), Name: "Thing",
			Quantity: q, UnitPrice: &typesv1.Money{AmountMinor: price, Currency: "EUR"}, LineTotal: &typesv1.Money{AmountMinor: q * price, Currency: "EUR"}})
		total += q * price
	}
	eur := func(v int64) *typesv1.Money { return &typesv1.Money{AmountMinor: v, Currency: "EUR"} }
	msgs := []proto.Message{&ordersv1.OrderPlaced{OrderId: id, CheckoutId: "co-" + id, CartId: "cart-" + id,
		Customer: &typesv1.Customer{CustomerId: fmt.Sprintf("cust-%d", rnd.IntN(50)), Email: "c@example.com"},
		Lines:    lines, Totals: &typesv1.Totals{Subtotal: eur(total), Total: eur(total)},
		ShippingAddress: &typesv1.Address{Name: "A", Line1: "1 Main St", City: "Berlin", CountryCode: "DE"}, PlacedAt: ts(0)}}
	switch r := rnd.IntN(10); {
	case r < 2:
		return append(msgs, &ordersv1.OrderCancelled{OrderId: id, Reason: ordersv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK, Detail: "SKU short", CancelledAt: ts(time.Second)})
	case r < 3:
		return msgs // still pending
	}
	msgs = append(msgs, &ordersv1.OrderConfirmed{OrderId: id, ConfirmedAt: ts(time.Second)},
		&ordersv1.OrderPaid{OrderId: id, PaymentId: "pay-" + id, Amount: eur(total), PaidAt: ts(2 * time.Second)})
	if rnd.IntN(3) > 0 {
		msgs = append(msgs, &ordersv1.OrderShipped{OrderId: id, ShipmentId: "sh-" + id, Carrier: "DHL", TrackingNumber: "T" + id, ShippedAt: ts(time.Hour)})
	}
	return msgs
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 7)) }

// catchUpTimeout bounds waitCaughtUp: 4 minutes, or KEEL_CATCH_UP_TIMEOUT
// for the large runs by hand.
func catchUpTimeout() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("KEEL_CATCH_UP_TIMEOUT")); err == nil && d > 0 {
		return d
	}
	return 4 * time.Minute
}
