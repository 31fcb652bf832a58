package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/events/wire"
)

// testLogger logs to the test output at debug level when KEEL_TEST_VERBOSE
// is set, at warn level otherwise.
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("KEEL_TEST_VERBOSE") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// testConfig is a Config for the local stack with fast retries and short
// heartbeats, so rebalances and retries fit in a test.
func testConfig(t testing.TB, pool *pgxpool.Pool, group string, topics ...string) Config {
	return Config{
		Brokers: testenv.KafkaBrokers(),
		Group:   group,
		Topics:  topics,
		Retry: RetryPolicy{
			MaxAttempts:    3,
			InitialBackoff: time.Millisecond,
			MaxBackoff:     10 * time.Millisecond,
		},
		MaxPollRecords: 100,
		Pool:           pool,
		Logger:         testLogger(t),
		Registerer:     prometheus.NewRegistry(),
		KafkaOpts: []kgo.Opt{
			kgo.HeartbeatInterval(300 * time.Millisecond),
			kgo.SessionTimeout(6 * time.Second),
			kgo.FetchMaxWait(200 * time.Millisecond),
		},
	}
}

// running is a Consumer whose Run goroutine the test controls.
type running struct {
	*Consumer
	cancel context.CancelFunc
	done   chan error
}

// start builds a Consumer and runs it until stop or the end of the test;
// a Run that returns an error fails the test.
func start(t *testing.T, cfg Config, h Handler, tweak ...func(*Consumer)) *running {
	t.Helper()
	c, err := New(cfg, h)
	testenv.Must(t, err, "new consumer")
	for _, f := range tweak {
		f(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Consumer: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and checks it returned nil within 20s. Stopping twice is
// fine.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
			if err != nil {
				t.Errorf("Run returned %v, want nil on cancel", err)
			}
		}
	case <-time.After(20 * time.Second):
		t.Errorf("Run did not return 20s after cancel")
	}
}

// event is one toy event: an amount for a stream.
type event struct {
	id     ksuid.KSUID
	stream string
	amount int64
}

// eventRecord is the wire record of e in topic/partition: the payload is
// the amount in decimal, a stand-in for a protobuf message.
func eventRecord(topic string, partition int32, e event) *kgo.Record {
	r := wire.Record(topic, "keel/test", envelope.Event{
		ID:         e.id,
		Type:       "keel.test.v1.Amount",
		StreamID:   e.stream,
		Version:    1,
		RecordedAt: time.Now(),
		Payload:    []byte(strconv.FormatInt(e.amount, 10)),
	})
	r.Partition = partition
	return r
}

// producer is a client that writes records to the partition they name.
func producer(t testing.TB) *kgo.Client {
	t.Helper()
	return testenv.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
}

func produce(t testing.TB, cl *kgo.Client, recs ...*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	testenv.Must(t, cl.ProduceSync(ctx, recs...).FirstErr(), "produce %d records", len(recs))
}

// amount decodes a toy event record.
func amount(rec *kgo.Record) (envelope.Event, int64, error) {
	ev, err := DecodeEvent(rec)
	if err != nil {
		return ev, 0, err
	}
	n, err := strconv.ParseInt(string(ev.Payload), 10, 64)
	if err != nil {
		return ev, 0, Permanent(fmt.Errorf("payload %q: %w", ev.Payload, err))
	}
	return ev, n, nil
}

func exec(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	_, err := pool.Exec(context.Background(), sql, args...)
	testenv.Must(t, err, "exec %s", sql)
}

func queryInt(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	err := pool.QueryRow(context.Background(), sql, args...).Scan(&n)
	testenv.Must(t, err, "query %s", sql)
	return n
}

// checkpoints reads the group's checkpoints of topic, by partition.
func checkpoints(t testing.TB, pool *pgxpool.Pool, group, topic string) map[int32]int64 {
	t.Helper()
	got, err := loadCheckpoints(context.Background(), pool, group, topic, []int32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	if err != nil {
		var pgErr interface{ SQLState() string }
		if errors.As(err, &pgErr) && pgErr.SQLState() == "42P01" {
			return map[int32]int64{} // table not created yet
		}
		t.Fatalf("checkpoints: %v", err)
	}
	return got
}

// waitCheckpoints waits until the group's checkpoints of topic equal want.
func waitCheckpoints(t testing.TB, pool *pgxpool.Pool, group, topic string, want map[int32]int64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var got map[int32]int64
	for time.Now().Before(deadline) {
		got = checkpoints(t, pool, group, topic)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("checkpoints of %s: got %v, want %v after %s", topic, got, want, within)
}

// waitFor polls cond every 20ms until it holds or within passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readAll reads every record of topic from the start, until n records
// arrived and a further second brought nothing.
func readAll(t testing.TB, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := testenv.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	var out []*kgo.Record
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		wait := 5 * time.Second
		if len(out) >= n {
			wait = time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		fs := cl.PollFetches(ctx)
		cancel()
		got := fs.Records()
		out = append(out, got...)
		if len(got) == 0 && len(out) >= n {
			break
		}
	}
	return out
}

func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// appliedSchema is the toy read model: the events applied, deduplicated by
// event id, and per-stream totals.
const appliedSchema = `
CREATE TABLE applied (
	event_id  text PRIMARY KEY,
	stream    text   NOT NULL,
	amount    bigint NOT NULL,
	partition int    NOT NULL,
	off       bigint NOT NULL,
	member    text   NOT NULL
);
CREATE TABLE totals (stream text PRIMARY KEY, n bigint NOT NULL, sum bigint NOT NULL);
-- deliveries counts every handler call that committed, duplicates
-- included: it is not idempotent on purpose, so a record applied twice
-- shows up here.
CREATE TABLE deliveries (partition int PRIMARY KEY, n bigint NOT NULL);
`

// projector is the handler pattern for an at-least-once stream with
// duplicates: dedupe by event id in the same transaction, then apply.
func projector(member string) HandlerFunc {
	return func(ctx context.Context, tx pgx.Tx, rec *kgo.Record) error {
		if _, err := tx.Exec(ctx, `INSERT INTO deliveries VALUES ($1, 1)
			ON CONFLICT (partition) DO UPDATE SET n = deliveries.n + 1`, rec.Partition); err != nil {
			return err
		}
		ev, n, err := amount(rec)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO applied VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (event_id) DO NOTHING`, ev.ID.String(), ev.StreamID, n, rec.Partition, rec.Offset, member)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil // a duplicate of an event already applied
		}
		_, err = tx.Exec(ctx, `INSERT INTO totals VALUES ($1, 1, $2)
			ON CONFLICT (stream) DO UPDATE SET n = totals.n + 1, sum = totals.sum + excluded.sum`, ev.StreamID, n)
		return err
	}
}
