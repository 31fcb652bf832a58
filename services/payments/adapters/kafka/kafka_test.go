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
	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/events/topics"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/events/wire"
	"github.com/keel-commerce/keel/services/payments/adapters/kafka"
	"github.com/keel-commerce/keel/services/payments/app"
	"github.com/keel-commerce/keel/services/payments/gateway/sim"
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
	name := "test.payments.commands." + strings.ToLower(ksuid.New().String())
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

func authorize(cmdID, payment string, amount int64) *paymentsv1.AuthorizePayment {
	return &paymentsv1.AuthorizePayment{CommandId: cmdID, PaymentId: payment, OrderId: "order-" + payment, Amount: eur(amount),
		PaymentMethod: &typesv1.PaymentMethod{Kind: typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_CARD, Token: "tok"}}
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
	gw, err := sim.New(sim.Config{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := app.New(ctx, st, app.Config{Gateway: gw})
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

	// Each command twice, in order; the payment id keys keep a payment's
	// commands in one partition.
	cmds := []struct {
		key string
		msg proto.Message
	}{
		{"p-1", authorize("c-auth-1", "p-1", 1000)},
		{"p-1", &paymentsv1.CapturePayment{CommandId: "c-cap-1", PaymentId: "p-1"}},
		{"p-1", &paymentsv1.RefundPayment{CommandId: "c-ref-1", PaymentId: "p-1", RefundId: "r-1", Amount: eur(400), Reason: "returned"}},
		{"p-2", authorize("c-auth-2", "p-2", 500)},
		{"p-2", &paymentsv1.VoidPayment{CommandId: "c-void-2", PaymentId: "p-2", Reason: "out of stock"}},
		{"p-2", &paymentsv1.CapturePayment{CommandId: "c-cap-2", PaymentId: "p-2"}},     // refused: voided
		{"p-none", &paymentsv1.VoidPayment{CommandId: "c-void-x", PaymentId: "p-none"}}, // refused: never attempted
	}
	var recs []*kgo.Record
	for _, c := range cmds {
		recs = append(recs, record(t, topic, c.key, c.msg), record(t, topic, c.key, c.msg))
	}
	garbage := &kgo.Record{Topic: topic, Key: []byte("p-1"), Value: []byte("\xff\xffnot protobuf"),
		Headers: []kgo.RecordHeader{{Key: wire.HeaderType, Value: []byte("keel.payments.v1.CapturePayment")}}}
	invalid := record(t, topic, "p-1", &paymentsv1.CapturePayment{CommandId: "c-bad"}) // no payment id
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
	if n[kafka.Accepted] != 5 || n[kafka.Replayed] < 5 || n[kafka.Refused] < 4 {
		t.Errorf("outcomes = %v, want exactly 5 accepted, at least 5 replayed and 4 refused", n)
	}

	// Effects once, exactly: p-1 authorized, captured and partly refunded,
	// p-2 authorized and voided. Each accepted command stores its intent
	// and its outcome; the refused capture is stored, the void of a payment
	// never attempted is not.
	var events, processed int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM processed_commands`).Scan(&processed); err != nil {
		t.Fatal(err)
	}
	if events != 5 || processed != 11 {
		t.Errorf("events = %d, processed commands = %d; want 5 and 11", events, processed)
	}
	v, err := svc.Get(ctx, "p-1")
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != "captured" || v.CapturedMinor != 1000 || v.RefundedMinor != 400 {
		t.Errorf("p-1 = %+v, want captured 1000, refunded 400", v)
	}
	if v, err := svc.Get(ctx, "p-2"); err != nil || v.Status != "voided" {
		t.Errorf("p-2 = %+v, %v; want voided", v, err)
	}
}
