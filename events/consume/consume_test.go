package consume

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/testenv"
)

// TestDuplicatesAndCrash: every event is in the topic twice and the
// consumer is killed twice mid-run (once between handler and commit); the
// read model still comes out exactly as computed from the events.
func TestDuplicatesAndCrash(t *testing.T) {
	t.Parallel()
	const (
		partitions = 4
		nEvents    = 2000
		streams    = 37
	)
	pool := testenv.Pool(t)
	topic := testenv.Topic(t, partitions)
	testenv.CreateTopics(t, 1, topic+DefaultDLQSuffix)
	exec(t, pool, appliedSchema)
	group := testenv.Name("g")

	// Each event twice, consecutively, in the partition of its stream.
	want := map[string][2]int64{} // stream -> n, sum
	var recs []*kgo.Record
	for i := range nEvents {
		e := event{id: ksuid.New(), stream: fmt.Sprintf("s-%d", i%streams), amount: int64(i%97 + 1)}
		p := int32(i % streams % partitions)
		recs = append(recs, eventRecord(topic, p, e), eventRecord(topic, p, e))
		w := want[e.stream]
		want[e.stream] = [2]int64{w[0] + 1, w[1] + e.amount}
	}
	produce(t, producer(t), recs...)
	perPartition := map[int32]int64{}
	for _, r := range recs {
		perPartition[r.Partition]++
	}

	cfg := testConfig(t, pool, group, topic)
	cfg.MaxPollRecords = 50

	// Run 1: killed between handler and commit of its 5th batch: the
	// batch's effects are written but never committed.
	var batches atomic.Int32
	crashed := make(chan struct{})
	r1 := start(t, cfg, projector("r1"), func(c *Consumer) {
		c.beforeCommit = func(ctx context.Context, _ pgx.Tx, _ string, _ int32, _ []*kgo.Record) error {
			if batches.Add(1) == 5 {
				close(crashed) // the process dies here
			}
			if batches.Load() >= 5 {
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		}
	})
	select {
	case <-crashed:
	case <-time.After(30 * time.Second):
		t.Fatal("run 1 did not reach its 5th batch")
	}
	r1.stop(t)
	mid := queryInt(t, pool, `SELECT coalesce(sum(n), 0) FROM deliveries`)
	if mid == 0 || mid >= int64(len(recs)) {
		t.Fatalf("after the crash %d of %d records are applied; want some, not all", mid, len(recs))
	}

	// Run 2: cancelled mid-run.
	cfg.Registerer = nil
	r2 := start(t, cfg, projector("r2"))
	waitFor(t, 30*time.Second, "run 2 to make progress", func() bool {
		return queryInt(t, pool, `SELECT coalesce(sum(n), 0) FROM deliveries`) > mid
	})
	r2.stop(t)

	// Run 3: to the end.
	start(t, cfg, projector("r3"))
	waitCheckpoints(t, pool, group, topic, perPartition, 60*time.Second)

	// Each record's effects once: every record counted once (duplicates
	// included), every event applied once, totals exact.
	gotDeliveries := map[int32]int64{}
	rows, _ := pool.Query(context.Background(), `SELECT partition, n FROM deliveries`)
	var p int32
	var n int64
	_, err := pgx.ForEachRow(rows, []any{&p, &n}, func() error { gotDeliveries[p] = n; return nil })
	testenv.Must(t, err, "read deliveries")
	if d := cmp.Diff(perPartition, gotDeliveries); d != "" {
		t.Errorf("records applied per partition (-want +got):\n%s", d)
	}
	if got := queryInt(t, pool, `SELECT count(*) FROM applied`); got != nEvents {
		t.Errorf("applied %d events, want %d", got, nEvents)
	}
	got := map[string][2]int64{}
	rows, _ = pool.Query(context.Background(), `SELECT stream, n, sum FROM totals`)
	var s string
	var sum int64
	_, err = pgx.ForEachRow(rows, []any{&s, &n, &sum}, func() error { got[s] = [2]int64{n, sum}; return nil })
	testenv.Must(t, err, "read totals")
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("totals (-want +got):\n%s", d)
	}
	if members := queryInt(t, pool, `SELECT count(DISTINCT member) FROM applied`); members != 3 {
		t.Errorf("%d runs applied events, want all 3", members)
	}
}
