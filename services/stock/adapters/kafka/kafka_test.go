package kafka_test

import (
	"context"
	"fmt"
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
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/keel-commerce/keel/events/consume"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/keel-commerce/keel/events/wire"
	"github.com/keel-commerce/keel/services/stock/adapters/kafka"
	"github.com/keel-commerce/keel/services/stock/app"
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
	name := "test.stock.commands." + strings.ToLower(ksuid.New().String())
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

// TestCommandsOnceAndPoisonToDLQ sends every kind of command twice, plus
// a garbage record and an invalid command: each command's effect happens
// once, the refusal is answered without retry, and the two bad records are
// dead-lettered.
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

	// Each command twice, in order; keys keep an aggregate in one partition.
	cmds := []struct {
		key string
		msg proto.Message
	}{
		{"SKU-1", &stockv1.ReceiveStock{CommandId: "c-rcv-1", Sku: "SKU-1", WarehouseId: "wh-1", Quantity: 5}},
		{"SKU-1", &stockv1.ReceiveStock{CommandId: "c-rcv-2", Sku: "SKU-1", WarehouseId: "wh-2", Quantity: 5}},
		{"SKU-1", &stockv1.AdjustStock{CommandId: "c-adj-1", Sku: "SKU-1", WarehouseId: "wh-1", Delta: -1,
			Reason: stockv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGED}},
		{"SKU-1", &stockv1.ReserveStock{CommandId: "c-res-1", OrderId: "o-1", Lines: []*stockv1.StockLine{{Sku: "SKU-1", Quantity: 3}},
			Ttl: durationpb.New(time.Hour)}},
		{"SKU-1", &stockv1.ReserveStock{CommandId: "c-res-2", OrderId: "o-2", Lines: []*stockv1.StockLine{{Sku: "SKU-1", Quantity: 2}}}},
		{"SKU-1", &stockv1.ReserveStock{CommandId: "c-res-3", OrderId: "o-3", Lines: []*stockv1.StockLine{{Sku: "SKU-1", Quantity: 100}}}}, // refused
		{"SKU-1", &stockv1.CommitReservation{CommandId: "c-com-1", OrderId: "o-1"}},
		{"SKU-1", &stockv1.ReleaseReservation{CommandId: "c-rel-2", OrderId: "o-2",
			Reason: stockv1.ReleaseReason_RELEASE_REASON_PAYMENT_FAILED}},
	}
	var recs []*kgo.Record
	for _, c := range cmds {
		recs = append(recs, record(t, topic, c.key, c.msg), record(t, topic, c.key, c.msg))
	}
	garbage := &kgo.Record{Topic: topic, Key: []byte("SKU-1"), Value: []byte("\xff\xffnot protobuf"),
		Headers: []kgo.RecordHeader{{Key: wire.HeaderType, Value: []byte("keel.stock.v1.ReceiveStock")}}}
	invalid := record(t, topic, "SKU-1", &stockv1.ReceiveStock{CommandId: "c-bad", Sku: "SKU-1", WarehouseId: "wh-1", Quantity: 0})
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
	if n[kafka.Accepted] != 7 || n[kafka.Replayed] < 7 || n[kafka.Refused] < 2 {
		t.Errorf("outcomes = %v, want exactly 7 accepted, at least 7 replayed and 2 refused", n)
	}

	// Effects once, exactly: 2 receipts, 1 adjustment, 2 reservations,
	// 1 commit, 1 release; the refused reservation reserved nothing and
	// recorded one AllocationFailed.
	var events, processed int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM processed_commands`).Scan(&processed); err != nil {
		t.Fatal(err)
	}
	if events != 8 || processed != 8 {
		t.Errorf("events = %d, processed commands = %d; want 8 and 8", events, processed)
	}
	var failed int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'keel.stock.v1.AllocationFailed'`,
		app.AllocationStream("o-3")).Scan(&failed); err != nil {
		t.Fatal(err)
	}
	if failed != 1 {
		t.Errorf("AllocationFailed of o-3 recorded %d times, want once", failed)
	}
	s, err := svc.Get(ctx, "SKU-1")
	if err != nil {
		t.Fatal(err)
	}
	wh := s.Warehouses()
	if got := fmt.Sprint(wh["wh-1"].OnHand+wh["wh-2"].OnHand, s.Available(), len(s.Reservations())); got != "6 6 0" {
		t.Errorf("on hand, available, open reservations = %s, want 6 6 0 (10 received, 1 damaged, 3 committed)", got)
	}
}
