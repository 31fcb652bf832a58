package consume

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/testenv"
)

// TestPoisonIsDeadLettered: a record the handler always rejects and a
// record that is not a Keel event both land in the dead-letter topic with
// their origin and error; the records after them are applied and the
// checkpoint moves past them.
func TestPoisonIsDeadLettered(t *testing.T) {
	t.Parallel()
	pool := testenv.Pool(t)
	topic := testenv.Topic(t, 2)
	dlq := topic + DefaultDLQSuffix
	testenv.CreateTopics(t, 1, dlq)
	exec(t, pool, appliedSchema)
	group := testenv.Name("g")

	const perPartition = 40
	var recs []*kgo.Record
	var poison, garbage *kgo.Record
	for p := range int32(2) {
		for i := range perPartition {
			r := eventRecord(topic, p, event{id: ksuid.New(), stream: fmt.Sprintf("s-%d-%d", p, i), amount: 1})
			switch {
			case p == 0 && i == 17:
				r = eventRecord(topic, p, event{id: ksuid.New(), stream: "poison", amount: 1})
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: "x-original", Value: []byte("kept")})
				poison = r
			case p == 1 && i == 5:
				r = &kgo.Record{Topic: topic, Partition: p, Key: []byte("junk"), Value: []byte("not an event")}
				garbage = r
			}
			recs = append(recs, r)
		}
	}
	produce(t, producer(t), recs...)

	var poisonCalls sync.Map // offset -> calls
	h := HandlerFunc(func(ctx context.Context, tx pgx.Tx, rec *kgo.Record) error {
		if string(rec.Key) == "poison" {
			n, _ := poisonCalls.LoadOrStore(rec.Offset, new(int))
			*n.(*int)++
			return errors.New("stock level must not be negative")
		}
		return projector("m")(ctx, tx, rec)
	})
	cfg := testConfig(t, pool, group, topic)
	cfg.Retry.MaxAttempts = 4
	c := start(t, cfg, h)
	waitCheckpoints(t, pool, group, topic, map[int32]int64{0: perPartition, 1: perPartition}, 30*time.Second)

	if got := queryInt(t, pool, `SELECT count(*) FROM applied`); got != 2*perPartition-2 {
		t.Errorf("applied %d events, want %d (all but the two dead letters)", got, 2*perPartition-2)
	}
	if got := queryInt(t, pool, `SELECT count(*) FROM applied WHERE partition = 0 AND off > $1`, poison.Offset); got != perPartition-1-poison.Offset {
		t.Errorf("applied %d events after the poison record, want %d", got, perPartition-1-poison.Offset)
	}
	if n, _ := poisonCalls.Load(poison.Offset); n == nil || *n.(*int) != 4 {
		t.Errorf("poison record handled %v times, want MaxAttempts = 4", n)
	}

	dead := readAll(t, dlq, 2)
	if len(dead) != 2 {
		t.Fatalf("dead-letter topic holds %d records, want 2", len(dead))
	}
	byOrigin := map[string]*kgo.Record{}
	for _, d := range dead {
		o, _ := header(d, HeaderDLQOriginPartition)
		byOrigin[o] = d
	}
	for _, tc := range []struct {
		orig     *kgo.Record
		attempts string
		errPart  string
	}{
		{poison, "4", "stock level must not be negative"},
		{garbage, "1", "malformed event record"}, // Permanent: no retries
	} {
		d := byOrigin[strconv.Itoa(int(tc.orig.Partition))]
		if d == nil {
			t.Errorf("no dead letter for partition %d", tc.orig.Partition)
			continue
		}
		if string(d.Key) != string(tc.orig.Key) || string(d.Value) != string(tc.orig.Value) {
			t.Errorf("dead letter key/value %q/%q, want %q/%q", d.Key, d.Value, tc.orig.Key, tc.orig.Value)
		}
		for _, oh := range tc.orig.Headers {
			if v, ok := header(d, oh.Key); !ok || v != string(oh.Value) {
				t.Errorf("dead letter lost header %s=%q (got %q)", oh.Key, oh.Value, v)
			}
		}
		want := map[string]string{
			HeaderDLQOriginTopic:     topic,
			HeaderDLQOriginPartition: strconv.Itoa(int(tc.orig.Partition)),
			HeaderDLQOriginOffset:    strconv.FormatInt(tc.orig.Offset, 10),
			HeaderDLQAttempts:        tc.attempts,
			HeaderDLQGroup:           group,
		}
		for k, w := range want {
			if v, _ := header(d, k); v != w {
				t.Errorf("dead letter of %d@%d: %s = %q, want %q", tc.orig.Partition, tc.orig.Offset, k, v, w)
			}
		}
		if v, _ := header(d, HeaderDLQError); !strings.Contains(v, tc.errPart) {
			t.Errorf("%s = %q, want it to contain %q", HeaderDLQError, v, tc.errPart)
		}
		v, _ := header(d, HeaderDLQTime)
		if at, err := time.Parse(time.RFC3339, v); err != nil || time.Since(at) > time.Minute || time.Until(at) > time.Minute {
			t.Errorf("%s = %q: not a recent RFC 3339 time (%v)", HeaderDLQTime, v, err)
		}
	}
	if got := testutil.ToFloat64(c.m.deadLetters.WithLabelValues(group, topic)); got != 2 {
		t.Errorf("dead letters metric %v, want 2", got)
	}
	if got := testutil.ToFloat64(c.m.handled.WithLabelValues(group, topic)); got != 2*perPartition-2 {
		t.Errorf("handled metric %v, want %d", got, 2*perPartition-2)
	}
}

// TestInfrastructureErrorsAreNotPoison: transient handler errors, a killed
// database connection and failing commits are retried for the whole batch
// until they pass; nothing is dead-lettered and everything is applied once,
// although each failure happens more often than MaxAttempts.
func TestInfrastructureErrorsAreNotPoison(t *testing.T) {
	t.Parallel()
	pool := testenv.Pool(t)
	topic := testenv.Topic(t, 2)
	dlq := topic + DefaultDLQSuffix
	testenv.CreateTopics(t, 1, dlq)
	exec(t, pool, appliedSchema)
	group := testenv.Name("g")

	const perPartition = 30
	var recs []*kgo.Record
	for p := range int32(2) {
		for i := range perPartition {
			recs = append(recs, eventRecord(topic, p, event{id: ksuid.New(), stream: fmt.Sprintf("s-%d-%d", p, i), amount: int64(i)}))
		}
	}
	produce(t, producer(t), recs...)

	var mu sync.Mutex
	transients, kills, commitFails := 0, 0, 0
	h := HandlerFunc(func(ctx context.Context, tx pgx.Tx, rec *kgo.Record) error {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case rec.Partition == 0 && rec.Offset == 7 && transients < 4:
			transients++
			return Transient(errors.New("inventory service unavailable"))
		case rec.Partition == 1 && rec.Offset == 11 && kills < 3:
			kills++
			// The database drops this connection mid-transaction.
			_, err := tx.Exec(ctx, `SELECT pg_terminate_backend(pg_backend_pid())`)
			return err
		}
		return projector("m")(ctx, tx, rec)
	})
	cfg := testConfig(t, pool, group, topic)
	cfg.Retry.MaxAttempts = 2
	c := start(t, cfg, h, func(c *Consumer) {
		c.beforeCommit = func(context.Context, pgx.Tx, string, int32, []*kgo.Record) error {
			mu.Lock()
			defer mu.Unlock()
			if commitFails < 3 {
				commitFails++
				return errors.New("commit: connection reset by peer")
			}
			return nil
		}
	})
	waitCheckpoints(t, pool, group, topic, map[int32]int64{0: perPartition, 1: perPartition}, 30*time.Second)

	mu.Lock()
	if transients != 4 || kills != 3 || commitFails != 3 {
		t.Errorf("injected %d transient errors, %d connection kills, %d commit failures; want 4, 3, 3", transients, kills, commitFails)
	}
	mu.Unlock()
	if got := queryInt(t, pool, `SELECT count(*) FROM applied`); got != 2*perPartition {
		t.Errorf("applied %d events, want %d", got, 2*perPartition)
	}
	if got := queryInt(t, pool, `SELECT sum(n) FROM deliveries`); got != 2*perPartition {
		t.Errorf("%d deliveries committed, want %d", got, 2*perPartition)
	}
	if got := testutil.ToFloat64(c.m.deadLetters.WithLabelValues(group, topic)); got != 0 {
		t.Errorf("dead letters metric %v, want 0", got)
	}
	if got := testutil.ToFloat64(c.m.retries.WithLabelValues(group, topic, retryBatch)); got < 10 {
		t.Errorf("batch retries metric %v, want ≥ 10", got)
	}
	offs, err := testenv.Admin(t).ListEndOffsets(context.Background(), dlq)
	testenv.Must(t, err, "end offsets of %s", dlq)
	offs.Each(func(o kadm.ListedOffset) {
		if o.Offset != 0 {
			t.Errorf("dead-letter partition %d has %d records, want 0", o.Partition, o.Offset)
		}
	})
}

// batchProjector is a BatchHandler: each batch in one call, failing the
// whole batch when it holds the poison record.
type batchProjector struct {
	HandlerFunc
	mu                    sync.Mutex
	batches               int
	open                  map[pgx.Tx]bool // transactions handed to HandleBatch, not yet finished
	committed, rolledBack int
}

// Finished implements FinishHook.
func (b *batchProjector) Finished(tx pgx.Tx, committed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.open, tx)
	if committed {
		b.committed++
	} else {
		b.rolledBack++
	}
}

func (b *batchProjector) HandleBatch(ctx context.Context, tx pgx.Tx, recs []*kgo.Record) error {
	b.mu.Lock()
	b.batches++
	if b.open == nil {
		b.open = map[pgx.Tx]bool{}
	}
	b.open[tx] = true
	b.mu.Unlock()
	for _, r := range recs {
		if err := b.HandlerFunc(ctx, tx, r); err != nil {
			return err
		}
	}
	return nil
}

// TestBatchHandler: a BatchHandler gets whole batches; a batch with a
// poison record falls back to record-by-record handling, which
// dead-letters the poison and applies the rest once.
func TestBatchHandler(t *testing.T) {
	t.Parallel()
	pool := testenv.Pool(t)
	topic := testenv.Topic(t, 1)
	dlq := topic + DefaultDLQSuffix
	testenv.CreateTopics(t, 1, dlq)
	exec(t, pool, appliedSchema)
	group := testenv.Name("g")

	const n = 60
	var recs []*kgo.Record
	for i := range n {
		stream := fmt.Sprintf("s-%d", i)
		if i == 31 {
			stream = "poison"
		}
		recs = append(recs, eventRecord(topic, 0, event{id: ksuid.New(), stream: stream, amount: 1}))
	}
	produce(t, producer(t), recs...)
	h := &batchProjector{HandlerFunc: func(ctx context.Context, tx pgx.Tx, rec *kgo.Record) error {
		if string(rec.Key) == "poison" {
			return errors.New("poison")
		}
		return projector("m")(ctx, tx, rec)
	}}
	cfg := testConfig(t, pool, group, topic)
	cfg.Retry.MaxAttempts = 2
	start(t, cfg, h)
	waitCheckpoints(t, pool, group, topic, map[int32]int64{0: n}, 30*time.Second)
	if got := queryInt(t, pool, `SELECT count(*) FROM applied`); got != n-1 {
		t.Errorf("applied %d events, want %d", got, n-1)
	}
	if dead := readAll(t, dlq, 1); len(dead) != 1 || string(dead[0].Key) != "poison" {
		t.Errorf("dead letters %v, want the poison record", dead)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.batches == 0 {
		t.Error("HandleBatch was never called")
	}
	// Every transaction is finished once: committed, or rolled back when
	// the poison made its batch fall back (at least once).
	if len(h.open) != 0 || h.committed == 0 || h.rolledBack == 0 {
		t.Errorf("finish hook: %d transactions never finished, %d committed, %d rolled back", len(h.open), h.committed, h.rolledBack)
	}
}

// TestAsyncCommit: a consumer with AsyncCommit handles its batches in
// transactions that do not wait for the WAL flush, one without it in
// ordinary ones; both apply everything and move their checkpoints.
func TestAsyncCommit(t *testing.T) {
	t.Parallel()
	pool := testenv.Pool(t)
	topic := testenv.Topic(t, 1)
	testenv.CreateTopics(t, 1, topic+DefaultDLQSuffix)
	const n = 20
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, eventRecord(topic, 0, event{id: ksuid.New(), stream: fmt.Sprintf("s-%d", i), amount: 1}))
	}
	produce(t, producer(t), recs...)
	for _, async := range []bool{true, false} {
		var mu sync.Mutex
		seen := map[string]int{}
		group := testenv.Name("g")
		cfg := testConfig(t, pool, group, topic)
		cfg.AsyncCommit = async
		start(t, cfg, HandlerFunc(func(ctx context.Context, tx pgx.Tx, _ *kgo.Record) error {
			var v string
			if err := tx.QueryRow(ctx, `SELECT current_setting('synchronous_commit')`).Scan(&v); err != nil {
				return err
			}
			mu.Lock()
			seen[v]++
			mu.Unlock()
			return nil
		}))
		waitCheckpoints(t, pool, group, topic, map[int32]int64{0: n}, 30*time.Second)
		want := map[string]int{"on": n}
		if async {
			want = map[string]int{"off": n}
		}
		mu.Lock()
		if fmt.Sprint(seen) != fmt.Sprint(want) {
			t.Errorf("AsyncCommit %v: synchronous_commit seen %v, want %v", async, seen, want)
		}
		mu.Unlock()
	}
}

// TestMaxBatchRecords: a partition's records of a poll are applied in
// transactions of at most MaxBatchRecords, in order, each with its
// checkpoint; everything is applied once.
func TestMaxBatchRecords(t *testing.T) {
	t.Parallel()
	pool := testenv.Pool(t)
	topic := testenv.Topic(t, 1)
	testenv.CreateTopics(t, 1, topic+DefaultDLQSuffix)
	exec(t, pool, appliedSchema)
	const n, max = 50, 8
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, eventRecord(topic, 0, event{id: ksuid.New(), stream: fmt.Sprintf("m-%d", i), amount: 1}))
	}
	produce(t, producer(t), recs...)
	var mu sync.Mutex
	var sizes []int
	h := &batchProjector{HandlerFunc: projector("m")}
	sized := sizedBatches{batchProjector: h, sizes: func(k int) { mu.Lock(); sizes = append(sizes, k); mu.Unlock() }}
	group := testenv.Name("g")
	cfg := testConfig(t, pool, group, topic)
	cfg.MaxBatchRecords = max
	start(t, cfg, sized)
	waitCheckpoints(t, pool, group, topic, map[int32]int64{0: n}, 30*time.Second)
	if got := queryInt(t, pool, `SELECT count(*) FROM applied WHERE stream LIKE 'm-%'`); got != n {
		t.Errorf("applied %d, want %d", got, n)
	}
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, k := range sizes {
		if k > max {
			t.Errorf("a transaction of %d records, max %d", k, max)
		}
		total += k
	}
	// However the polls came, transactions of at most max records make at
	// least ceil(n/max) of them; one poll of all n without the split, one.
	if total != n || len(sizes) < (n+max-1)/max {
		t.Errorf("batch sizes %v: %d records in %d transactions", sizes, total, len(sizes))
	}
}

// sizedBatches reports the size of every batch handed to HandleBatch.
type sizedBatches struct {
	*batchProjector
	sizes func(int)
}

func (s sizedBatches) HandleBatch(ctx context.Context, tx pgx.Tx, recs []*kgo.Record) error {
	s.sizes(len(recs))
	return s.batchProjector.HandleBatch(ctx, tx, recs)
}
