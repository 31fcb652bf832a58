package kafka_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/keel-commerce/keel/events/consume"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/events/topics"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/events/wire"
	"github.com/keel-commerce/keel/services/orders/adapters/kafka"
	"github.com/keel-commerce/keel/services/orders/app"
)

func brokers() []string {
	if b := os.Getenv("KEEL_KAFKA_BROKERS"); b != "" {
		return strings.Split(b, ",")
	}
	return []string{"127.0.0.1:9092"}
}

// testTopics creates a command topic and its dead-letter topic for this
// test only and deletes them when it ends.
func testTopics(t *testing.T, cl *kgo.Client) string {
	t.Helper()
	adm := kadm.NewClient(cl)
	name := "test.orders.commands." + strings.ToLower(ksuid.New().String())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := topics.Ensure(ctx, adm, topics.EventSpec(name, 3, 1), topics.DLQSpec(topics.DLQ(name), 1, 1)); err != nil {
		t.Fatalf("create topics (is Kafka up? run `make up`): %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := adm.DeleteTopics(ctx, name, topics.DLQ(name)); err != nil {
			t.Logf("delete topics: %v", err)
		}
	})
	return name
}

func record(t *testing.T, topic, key string, m proto.Message) *kgo.Record {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(key), Value: b, Headers: []kgo.RecordHeader{
		{Key: wire.HeaderType, Value: []byte(string(m.ProtoReflect().Descriptor().FullName()))},
	}}
}

type outcomes struct {
	mu sync.Mutex
	n  map[kafka.Outcome]int
}

func (o *outcomes) add(_ string, oc kafka.Outcome, _ error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n[oc]++
}

func (o *outcomes) get() map[kafka.Outcome]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[kafka.Outcome]int{}
	for k, v := range o.n {
		out[k] = v
	}
	return out
}

func eur(n int64) *typesv1.Money { return &typesv1.Money{AmountMinor: n, Currency: "EUR"} }

func place(cmdID, checkout string) *ordersv1.PlaceOrder {
	return &ordersv1.PlaceOrder{CommandId: cmdID, CheckoutId: checkout, CartId: "cart-" + checkout,
		Customer:        &typesv1.Customer{CustomerId: "cus-1", Email: "a@example.com"},
		ShippingAddress: &typesv1.Address{Line1: "1 Road", City: "Berlin", CountryCode: "DE"},
		Lines:           []*ordersv1.OrderLine{{Sku: "a", Quantity: 2, UnitPrice: eur(250)}, {Sku: "b", Quantity: 1, UnitPrice: eur(1000)}}}
}

// TestCommandsOnceAndPoisonToDLQ sends every kind of command twice, plus
// a garbage record and an invalid command: each command's effect happens
// once, the refusals are answered without retry, and the two bad records
// are dead-lettered.
func TestCommandsOnceAndPoisonToDLQ(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	svc, err := app.New(ctx, st, app.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers()...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	topic := testTopics(t, cl)

	// Each command twice, in order; the order id keys keep an order's
	// commands in one partition.
	cmds := []struct {
		key string
		msg proto.Message
	}{
		{"order-co-1", place("c-place-1", "co-1")},
		{"order-co-1", &ordersv1.ConfirmOrder{CommandId: "c-conf-1", OrderId: "order-co-1"}},
		{"order-co-1", &ordersv1.MarkOrderPaid{CommandId: "c-paid-1", OrderId: "order-co-1", PaymentId: "pay-1", Amount: eur(1500)}},
		{"order-co-1", &ordersv1.ShipOrder{CommandId: "c-ship-1", OrderId: "order-co-1", ShipmentId: "shp-1", Carrier: "dhl", TrackingNumber: "T1"}},
		{"order-co-2", place("c-place-2", "co-2")},
		{"order-co-2", &ordersv1.CancelOrder{CommandId: "c-cancel-2", OrderId: "order-co-2",
			Reason: ordersv1.CancelReason_CANCEL_REASON_PAYMENT_FAILED, Detail: "declined"}},
		{"order-co-2", &ordersv1.ShipOrder{CommandId: "c-ship-2", OrderId: "order-co-2", ShipmentId: "shp-2", Carrier: "dhl"}}, // refused: cancelled
		{"order-none", &ordersv1.CancelOrder{CommandId: "c-cancel-x", OrderId: "order-none",
			Reason: ordersv1.CancelReason_CANCEL_REASON_OPERATOR}}, // refused: never placed
	}
	var recs []*kgo.Record
	for _, c := range cmds {
		recs = append(recs, record(t, topic, c.key, c.msg), record(t, topic, c.key, c.msg))
	}
	garbage := &kgo.Record{Topic: topic, Key: []byte("order-co-1"), Value: []byte("\xff\xffnot protobuf"),
		Headers: []kgo.RecordHeader{{Key: wire.HeaderType, Value: []byte("keel.orders.v1.ConfirmOrder")}}}
	invalid := record(t, topic, "order-co-1", &ordersv1.ConfirmOrder{CommandId: "c-bad"}) // no order id
	recs = append(recs, garbage, invalid)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(pctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	h, err := kafka.NewHandler(svc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	oc := &outcomes{n: map[kafka.Outcome]int{}}
	h.OnOutcome = oc.add
	c, err := kafka.NewConsumer(kafka.Config{
		Brokers:    brokers(),
		Group:      "test-" + topic,
		Topics:     []string{topic},
		Pool:       pool,
		Registerer: prometheus.NewRegistry(),
		Retry:      consume.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
		KafkaOpts: []kgo.Opt{kgo.HeartbeatInterval(300 * time.Millisecond), kgo.SessionTimeout(6 * time.Second),
			kgo.FetchMaxWait(200 * time.Millisecond)},
	}, h)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	})

	// Both bad records reach the dead-letter topic.
	dead := testenv.DeadLetters(t, topic, 2)
	for _, r := range dead {
		if string(r.Value) != string(garbage.Value) && string(r.Value) != string(invalid.Value) {
			t.Errorf("unexpected dead letter %q", r.Value)
		}
	}

	// Every record is past: the checkpoints sum to the records produced
	// (a fresh topic starts at offset 0 in every partition).
	testenv.WaitCheckpoints(t, pool, topic, int64(len(recs)))
	// A command runs for real once; its second delivery (and any retry of
	// a batch around a poison record) is answered from the stored outcome.
	n := oc.get()
	if n[kafka.Accepted] != 6 || n[kafka.Replayed] < 6 || n[kafka.Refused] < 4 {
		t.Errorf("outcomes = %v, want exactly 6 accepted, at least 6 replayed and 4 refused", n)
	}

	// Effects once, exactly: two orders placed, one confirmed, paid and
	// shipped, the other cancelled; the refused ship is stored, the cancel
	// of an order never placed is not.
	var events, processed int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM processed_commands`).Scan(&processed); err != nil {
		t.Fatal(err)
	}
	if events != 6 || processed != 7 {
		t.Errorf("events = %d, processed commands = %d; want 6 and 7", events, processed)
	}
	for id, want := range map[string]string{"order-co-1": "shipped", "order-co-2": "cancelled"} {
		v, err := svc.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if v.Status != want {
			t.Errorf("%s: status %s, want %s", id, v.Status, want)
		}
	}
}
