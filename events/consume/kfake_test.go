package consume

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keel-commerce/keel/events/testenv"
)

// TestDeadLetterProduceFailure (kfake): while the dead-letter topic refuses
// writes, the poison record's partition does not move: nothing of its batch
// is committed and its checkpoint stays before the poison record. Once the
// topic accepts writes again, the record is dead-lettered and the
// partition moves on.
func TestDeadLetterProduceFailure(t *testing.T) {
	t.Parallel()
	const topic = "orders.events"
	dlq := topic + DefaultDLQSuffix
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic, dlq))
	testenv.Must(t, err, "kfake cluster")
	t.Cleanup(cluster.Close)

	pool := testenv.Pool(t)
	exec(t, pool, appliedSchema)
	group := testenv.Name("g")

	prod, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	testenv.Must(t, err, "producer")
	t.Cleanup(prod.Close)
	const n = 10
	const poisonAt = 3
	var recs []*kgo.Record
	for i := range n {
		r := eventRecord(topic, 0, event{id: ksuid.New(), stream: fmt.Sprintf("s-%d", i), amount: 1})
		if i == poisonAt {
			r.Value = []byte("not a number") // amount() says Permanent
		}
		recs = append(recs, r)
	}
	produce(t, prod, recs...)

	// Every produce to the dead-letter topic fails until removed.
	// INVALID_RECORD is not retriable, so each failure reaches the runtime.
	fault := cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: dlq, Err: kerr.InvalidRecord, Count: -1})

	cfg := testConfig(t, pool, group, topic)
	cfg.Brokers = cluster.ListenAddrs()
	c := start(t, cfg, projector("m"))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	testenv.Must(t, fault.Wait(ctx, 4), "dead-letter produce to fail 4 times")
	if got := checkpoints(t, pool, group, topic); got[0] > poisonAt {
		t.Errorf("checkpoint %v moved past the poison record at %d while its dead letter was not written", got, poisonAt)
	}
	if got := queryInt(t, pool, `SELECT count(*) FROM applied WHERE off > $1`, poisonAt); got != 0 {
		t.Errorf("%d records after the poison record applied while its dead letter was not written", got)
	}
	if got := testutil.ToFloat64(c.m.retries.WithLabelValues(group, topic, retryDLQ)); got < 3 {
		t.Errorf("dead-letter retries metric %v, want ≥ 3", got)
	}

	fault.Remove()
	waitCheckpoints(t, pool, group, topic, map[int32]int64{0: n}, 20*time.Second)
	if got := queryInt(t, pool, `SELECT count(*) FROM applied`); got != n-1 {
		t.Errorf("applied %d records, want %d", got, n-1)
	}
	if hwm := cluster.PartitionInfo(dlq, 0).HighWatermark; hwm != 1 {
		t.Fatalf("dead-letter topic holds %d records, want 1", hwm)
	}
	cons, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(dlq),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	testenv.Must(t, err, "dlq consumer")
	defer cons.Close()
	fs := cons.PollFetches(ctx)
	testenv.Must(t, fs.Err(), "poll dead letters")
	d := fs.Records()[0]
	if v, _ := header(d, HeaderDLQOriginOffset); v != strconv.Itoa(poisonAt) {
		t.Errorf("dead letter from offset %q, want %d", v, poisonAt)
	}
	if v, _ := header(d, HeaderDLQAttempts); v != "1" {
		t.Errorf("dead letter after %q attempts, want 1 (Permanent)", v)
	}
}
