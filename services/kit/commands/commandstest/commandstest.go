// Package commandstest is the broker test every service runs on its Kafka
// command consumer (package commands): each command is produced twice to a
// fresh topic, commands reusing an earlier command's id and poison records
// after them; the test then checks that every command ran once and was
// replayed, that refusals were answered, that each reused id was refused as
// such (neither applied nor dead-lettered), that the poison was
// dead-lettered, and how many events and processed commands the
// service stored. The service's own test sets up the service and its
// commands, and checks the service's state after Run.
//
// It needs the local stack (events/testenv): PostgreSQL and Kafka.
package commandstest

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consume"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/keel-commerce/keel/events/wire"
	"github.com/keel-commerce/keel/services/kit/commands"
)

// Command is one command record to produce: its key and message.
type Command struct {
	Key string
	Msg proto.Message
}

// Case is one service's broker test of its command consumer.
type Case struct {
	// Service names the test's topics: test.<Service>.commands.<random>
	// and its dead-letter topic.
	Service string
	// Pool is the service's database (testenv.Pool), where the consumer
	// keeps its checkpoints.
	Pool *pgxpool.Pool
	// Handler is the service's command handler; Run sets its OnOutcome.
	Handler *commands.Handler
	// NewConsumer is the service's kafka.NewConsumer.
	NewConsumer func(consume.Config, *commands.Handler) (*consume.Consumer, error)
	// Commands are produced twice each, in order.
	Commands []Command
	// Reused are produced once each after Commands: each carries the
	// command_id of one of Commands (a different one each) but is another
	// command (type, target or input), and must be refused with
	// command.ErrIDReused. Count them
	// in Refused, not in Events or Processed.
	Reused []Command
	// Poison records (see Record and Garbage) are produced after the
	// commands; each must be dead-lettered, and nothing else.
	Poison []*kgo.Record
	// Accepted commands must run exactly once, and be replayed at least as
	// often; at least Refused refusals must be answered.
	Accepted, Refused int
	// Events and Processed are the rows of the events and
	// processed_commands tables once every record is handled.
	Events, Processed int
}

// Record returns a command record of m, keyed by key, its type in the
// ce_type header. Run sets its topic.
func Record(t testing.TB, key string, m proto.Message) *kgo.Record {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Key: []byte(key), Value: b, Headers: []kgo.RecordHeader{
		{Key: wire.HeaderType, Value: []byte(string(m.ProtoReflect().Descriptor().FullName()))},
	}}
}

// Garbage returns a record keyed by key that names typ in its ce_type
// header but holds no protobuf. Run sets its topic.
func Garbage(key, typ string) *kgo.Record {
	return &kgo.Record{Key: []byte(key), Value: []byte("\xff\xffnot protobuf"),
		Headers: []kgo.RecordHeader{{Key: wire.HeaderType, Value: []byte(typ)}}}
}

// Run produces c's records to a fresh command topic, runs c's consumer on
// it until the test ends, and checks the dead letters, the outcomes and
// the stored rows (see Case).
func Run(t *testing.T, c Case) {
	t.Helper()
	ctx := context.Background()
	cl := testenv.Client(t, kgo.RequiredAcks(kgo.AllISRAcks()))
	topic := testTopics(t, cl, c.Service)

	var recs []*kgo.Record
	for _, cmd := range c.Commands {
		recs = append(recs, Record(t, cmd.Key, cmd.Msg), Record(t, cmd.Key, cmd.Msg))
	}
	for _, cmd := range c.Reused {
		recs = append(recs, Record(t, cmd.Key, cmd.Msg))
	}
	recs = append(recs, c.Poison...)
	for _, r := range recs {
		r.Topic = topic
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(pctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	oc := &outcomes{n: map[commands.Outcome]int{}}
	c.Handler.OnOutcome = oc.add
	cons, err := c.NewConsumer(consume.Config{
		Brokers:    testenv.KafkaBrokers(),
		Group:      "test-" + topic,
		Topics:     []string{topic},
		Pool:       c.Pool,
		Registerer: prometheus.NewRegistry(),
		Retry:      consume.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
		KafkaOpts: []kgo.Opt{kgo.HeartbeatInterval(300 * time.Millisecond), kgo.SessionTimeout(6 * time.Second),
			kgo.FetchMaxWait(200 * time.Millisecond)},
	}, c.Handler)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cons.Run(rctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	})

	// Every poison record reaches the dead-letter topic, and nothing else.
	for _, r := range testenv.DeadLetters(t, topic, len(c.Poison)) {
		if !poison(c.Poison, r.Value) {
			t.Errorf("unexpected dead letter %q", r.Value)
		}
	}

	// Every record is past: the checkpoints sum to the records produced
	// (a fresh topic starts at offset 0 in every partition).
	testenv.WaitCheckpoints(t, c.Pool, topic, int64(len(recs)))
	// A command runs for real once; its second delivery (and any retry of
	// a batch around a poison record) is answered from the stored outcome.
	n := oc.get()
	if n[commands.Accepted] != c.Accepted || n[commands.Replayed] < c.Accepted || n[commands.Refused] < c.Refused {
		t.Errorf("outcomes = %v, want exactly %d accepted, at least %d replayed and %d refused", n, c.Accepted, c.Accepted, c.Refused)
	}
	if got := oc.reusedIDs(); len(got) < len(c.Reused) {
		t.Errorf("refused as reused ids: %v; want each of the %d Reused commands (distinct ids)", got, len(c.Reused))
	}

	var events, processed int
	if err := c.Pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if err := c.Pool.QueryRow(ctx, `SELECT count(*) FROM processed_commands`).Scan(&processed); err != nil {
		t.Fatal(err)
	}
	if events != c.Events || processed != c.Processed {
		t.Errorf("events = %d, processed commands = %d; want %d and %d", events, processed, c.Events, c.Processed)
	}
}

func poison(recs []*kgo.Record, value []byte) bool {
	for _, r := range recs {
		if string(r.Value) == string(value) {
			return true
		}
	}
	return false
}

// testTopics creates a command topic of service and its dead-letter topic
// for this test only and deletes them when it ends.
func testTopics(t *testing.T, cl *kgo.Client, service string) string {
	t.Helper()
	adm := kadm.NewClient(cl)
	name := "test." + service + ".commands." + strings.ToLower(ksuid.New().String())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := topics.Ensure(ctx, adm, topics.EventSpec(name, 3, 1), topics.DLQSpec(topics.DLQ(name), 1, 1)); err != nil {
		t.Fatalf("create topics (is Kafka up? run `make up`): %v", err)
	}
	testenv.DeleteTopicsAtEnd(t, name, topics.DLQ(name))
	return name
}

// outcomes counts the outcomes a Handler reports.
type outcomes struct {
	mu     sync.Mutex
	n      map[commands.Outcome]int
	reused map[string]bool // ids refused as reused
}

func (o *outcomes) add(id string, oc commands.Outcome, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n[oc]++
	if oc == commands.Refused && errors.Is(err, command.ErrIDReused) {
		if o.reused == nil {
			o.reused = map[string]bool{}
		}
		o.reused[id] = true
	}
}

func (o *outcomes) reusedIDs() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Sorted(maps.Keys(o.reused))
}

func (o *outcomes) get() map[commands.Outcome]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[commands.Outcome]int{}
	for k, v := range o.n {
		out[k] = v
	}
	return out
}
