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

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	"github.com/keel-commerce/keel/events/consume"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/events/topics"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/events/wire"
	"github.com/keel-commerce/keel/services/carts/adapters/kafka"
	"github.com/keel-commerce/keel/services/carts/app"
	"github.com/keel-commerce/keel/services/carts/domain"
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
	name := "test.carts.commands." + strings.ToLower(ksuid.New().String())
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

// prices is an in-memory catalog: every SKU costs 100 cents in EUR.
type prices struct{}

func (prices) Product(_ context.Context, sku string) (domain.Product, error) {
	return domain.Product{SKU: sku, Name: "Product " + sku, UnitPrice: &typesv1.Money{AmountMinor: 100, Currency: "EUR"}}, nil
}

// checkingOut creates cart id with one line and freezes it for checkout.
func checkingOut(t *testing.T, svc *app.Service, id, checkout string) {
	t.Helper()
	ctx := context.Background()
	if _, err := svc.Create(ctx, app.Create{CommandID: id + ":create", CartID: id, CustomerID: "cus-1", Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AddLine(ctx, app.AddLine{CommandID: id + ":add", CartID: id, SKU: "SKU-1", Quantity: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RequestCheckout(ctx, app.RequestCheckout{CommandID: id + ":checkout", CartID: id, CheckoutID: checkout,
		Customer:        &typesv1.Customer{CustomerId: "cus-1"},
		ShippingAddress: &typesv1.Address{Line1: "1 Road", City: "Berlin", CountryCode: "DE"},
		PaymentMethod:   &typesv1.PaymentMethod{Kind: typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_CARD, Token: "tok"}}); err != nil {
		t.Fatal(err)
	}
}

// TestCommandsOnceAndPoisonToDLQ sends every kind of command twice, plus
// a garbage record, an invalid command and a shopper's command: each command's effect happens
// once, the refusals are answered without retry, and the three bad
// records are dead-lettered.
func TestCommandsOnceAndPoisonToDLQ(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	svc, err := app.New(ctx, st, prices{}, app.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	checkingOut(t, svc, "cart-1", "co-1")
	checkingOut(t, svc, "cart-2", "co-2")

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers()...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	topic := testTopics(t, cl)

	// Each command twice, in order; the cart id keys keep a cart's
	// commands in one partition.
	cmds := []struct {
		key string
		msg proto.Message
	}{
		{"cart-1", &cartsv1.CloseCart{CommandId: "c-close-1", CartId: "cart-1", CheckoutId: "co-1", OrderId: "order-co-1"}},
		{"cart-2", &cartsv1.ReopenCart{CommandId: "c-reopen-2", CartId: "cart-2", CheckoutId: "co-2", Reason: "payment failed"}},
		{"cart-2", &cartsv1.CloseCart{CommandId: "c-close-2", CartId: "cart-2", CheckoutId: "co-2", OrderId: "order-co-2"}}, // refused: open again
		{"cart-none", &cartsv1.ReopenCart{CommandId: "c-reopen-x", CartId: "cart-none", CheckoutId: "co-x"}},                // refused: unknown cart
	}
	var recs []*kgo.Record
	for _, c := range cmds {
		recs = append(recs, record(t, topic, c.key, c.msg), record(t, topic, c.key, c.msg))
	}
	garbage := &kgo.Record{Topic: topic, Key: []byte("cart-1"), Value: []byte("\xff\xffnot protobuf"),
		Headers: []kgo.RecordHeader{{Key: wire.HeaderType, Value: []byte("keel.carts.v1.CloseCart")}}}
	invalid := record(t, topic, "cart-1", &cartsv1.CloseCart{CommandId: "c-bad", CartId: "cart-1"})   // no checkout or order id
	shopper := record(t, topic, "cart-1", &cartsv1.ClearCart{CommandId: "c-clear", CartId: "cart-1"}) // HTTP only
	recs = append(recs, garbage, invalid, shopper)
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
	dead := testenv.DeadLetters(t, topic, 3)
	for _, r := range dead {
		if v := string(r.Value); v != string(garbage.Value) && v != string(invalid.Value) && v != string(shopper.Value) {
			t.Errorf("unexpected dead letter %q", r.Value)
		}
	}

	// Every record is past: the checkpoints sum to the records produced
	// (a fresh topic starts at offset 0 in every partition).
	testenv.WaitCheckpoints(t, pool, topic, int64(len(recs)))
	// A command runs for real once; its second delivery (and any retry of
	// a batch around a poison record) is answered from the stored outcome.
	n := oc.get()
	if n[kafka.Accepted] != 2 || n[kafka.Replayed] < 2 || n[kafka.Refused] < 4 {
		t.Errorf("outcomes = %v, want exactly 2 accepted, at least 2 replayed and 4 refused", n)
	}

	// Effects once, exactly: the set-up's 6 commands and events, then one
	// close and one reopen; both refusals are stored.
	var events, processed int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM processed_commands`).Scan(&processed); err != nil {
		t.Fatal(err)
	}
	if events != 8 || processed != 10 {
		t.Errorf("events = %d, processed commands = %d; want 8 and 10", events, processed)
	}
	for id, want := range map[string]string{"cart-1": "closed", "cart-2": "open"} {
		v, err := svc.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if v.Status != want {
			t.Errorf("%s: status %s, want %s", id, v.Status, want)
		}
	}
}
