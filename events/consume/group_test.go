package consume

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/testenv"
)

// TestTwoMembersShareTheWork: member B joins while A is busy, then A leaves;
// the partitions spread over both and every record is applied exactly once
// (a primary key on the event id with a plain INSERT would turn a second
// application into a dead letter).
func TestTwoMembersShareTheWork(t *testing.T) {
	t.Parallel()
	const (
		partitions = 8
		nEvents    = 4000
	)
	pool := testenv.Pool(t)
	topic := testenv.Topic(t, partitions)
	dlq := topic + DefaultDLQSuffix
	testenv.CreateTopics(t, 1, dlq)
	exec(t, pool, `CREATE TABLE seen (event_id text PRIMARY KEY, partition int NOT NULL, member text NOT NULL)`)
	group := testenv.Name("g")

	var recs []*kgo.Record
	want := map[int32]int64{}
	for i := range nEvents {
		p := int32(i % partitions)
		recs = append(recs, eventRecord(topic, p, event{id: ksuid.New(), stream: fmt.Sprintf("s-%d", i), amount: 1}))
		want[p]++
	}
	produce(t, producer(t), recs...)

	member := func(name string) HandlerFunc {
		return func(ctx context.Context, tx pgx.Tx, rec *kgo.Record) error {
			ev, err := DecodeEvent(rec)
			if err != nil {
				return err
			}
			time.Sleep(time.Millisecond) // real work takes time: B joins while A is busy
			_, err = tx.Exec(ctx, `INSERT INTO seen VALUES ($1, $2, $3)`, ev.ID.String(), rec.Partition, name)
			return err
		}
	}
	cfg := testConfig(t, pool, group, topic)
	cfg.MaxPollRecords = 40
	a := start(t, cfg, member("a"))
	waitFor(t, 30*time.Second, "member a to start", func() bool {
		return queryInt(t, pool, `SELECT count(*) FROM seen`) > 100
	})
	cfgB := cfg
	cfgB.Registerer = nil
	b := start(t, cfgB, member("b"))
	waitFor(t, 30*time.Second, "member b to take partitions", func() bool {
		return queryInt(t, pool, `SELECT count(*) FROM seen WHERE member = 'b'`) > 100
	})
	// Both own partitions at once, and never the same one.
	owned := func(c *running) map[tp]bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		m := map[tp]bool{}
		for k := range c.cps {
			m[k] = true
		}
		return m
	}
	waitFor(t, 10*time.Second, "the partitions to be split", func() bool {
		oa, ob := owned(a), owned(b)
		for k := range oa {
			if ob[k] {
				return false
			}
		}
		return len(oa) > 0 && len(ob) > 0 && len(oa)+len(ob) == partitions
	})
	a.stop(t) // b takes over a's partitions
	// a left the group on its way out: b is alone at once, not after a's
	// session timeout (6s).
	adm := testenv.Admin(t)
	stopped := time.Now()
	waitFor(t, 10*time.Second, "member a to leave the group", func() bool {
		gs, err := adm.DescribeGroups(context.Background(), group)
		return err == nil && len(gs[group].Members) == 1
	})
	if d := time.Since(stopped); d > 3*time.Second {
		t.Errorf("member a left the group %s after it stopped; it did not leave cleanly", d)
	}
	waitCheckpoints(t, pool, group, topic, want, 60*time.Second)

	if got := queryInt(t, pool, `SELECT count(*) FROM seen`); got != nEvents {
		t.Errorf("applied %d events, want %d", got, nEvents)
	}
	for _, m := range []string{"a", "b"} {
		n := queryInt(t, pool, `SELECT count(DISTINCT partition) FROM seen WHERE member = $1`, m)
		t.Logf("member %s applied records of %d partitions", m, n)
		if n == 0 {
			t.Errorf("member %s applied nothing: the work did not spread", m)
		}
	}
	for _, c := range []*running{a, b} {
		if got := testutil.ToFloat64(c.m.deadLetters.WithLabelValues(group, topic)); got != 0 {
			t.Errorf("dead letters %v, want 0: a record was applied twice", got)
		}
	}
	if got := testutil.ToFloat64(a.m.handled.WithLabelValues(group, topic)) + testutil.ToFloat64(b.m.handled.WithLabelValues(group, topic)); got != nEvents {
		t.Errorf("handled metrics add up to %v, want %d", got, nEvents)
	}
}

// TestFencing: while a batch is in flight, another "member" (the test,
// playing the partition's new owner) applies records and moves the
// checkpoint on. The runtime's compare-and-set fails, it rolls its batch
// back and re-seeks to the new checkpoint: every record is applied once,
// on the UPDATE path (a row existed) and on the INSERT path (none did).
func TestFencing(t *testing.T) {
	t.Parallel()
	pool := testenv.Pool(t)
	topic := testenv.Topic(t, 2)
	testenv.CreateTopics(t, 1, topic+DefaultDLQSuffix)
	// No unique key on purpose: a record applied twice shows as two rows.
	exec(t, pool, `CREATE TABLE log (partition int NOT NULL, off bigint NOT NULL, v bigint NOT NULL, by text NOT NULL)`)
	group := testenv.Name("g")

	const perPartition = 200
	var recs []*kgo.Record
	for p := range int32(2) {
		for i := range perPartition {
			recs = append(recs, eventRecord(topic, p, event{id: ksuid.New(), stream: "s", amount: int64(i)}))
		}
	}
	produce(t, producer(t), recs...)

	// takeover applies [from, to) of partition p as a zombie's rival would,
	// and moves the checkpoint to `to`, in its own transaction. It reads
	// the checkpoint it starts from; none means the start of the partition.
	takeover := func(ctx context.Context, p int32, to int64) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		var from int64
		err = tx.QueryRow(ctx, `SELECT next_offset FROM consumer_checkpoints WHERE group_id = $1 AND topic = $2 AND partition = $3`,
			group, topic, p).Scan(&from)
		if err != nil && err != pgx.ErrNoRows {
			return err
		}
		for o := from; o < to; o++ {
			if _, err := tx.Exec(ctx, `INSERT INTO log VALUES ($1, $2, $2, 'rival')`, p, o); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO consumer_checkpoints (group_id, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
			ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = excluded.next_offset`, group, topic, p, to); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}

	var once [2]sync.Once
	h := HandlerFunc(func(ctx context.Context, tx pgx.Tx, rec *kgo.Record) error {
		var err error
		switch {
		case rec.Partition == 0 && rec.Offset == 50: // a checkpoint row exists: UPDATE path
			once[0].Do(func() { err = takeover(ctx, 0, 70) })
		case rec.Partition == 1 && rec.Offset == 5: // first batch, no row yet: INSERT path
			once[1].Do(func() { err = takeover(ctx, 1, 30) })
		}
		if err != nil {
			return Transient(err)
		}
		v, _ := strconv.ParseInt(string(rec.Value), 10, 64)
		_, err = tx.Exec(ctx, `INSERT INTO log VALUES ($1, $2, $3, 'runtime')`, rec.Partition, rec.Offset, v)
		return err
	})
	cfg := testConfig(t, pool, group, topic)
	cfg.MaxPollRecords = 20
	c := start(t, cfg, h)
	waitCheckpoints(t, pool, group, topic, map[int32]int64{0: perPartition, 1: perPartition}, 30*time.Second)

	for p := range int32(2) {
		if got := queryInt(t, pool, `SELECT count(*) FROM log WHERE partition = $1`, p); got != perPartition {
			t.Errorf("partition %d: %d records applied, want %d", p, got, perPartition)
		}
		if got := queryInt(t, pool, `SELECT count(DISTINCT off) FROM log WHERE partition = $1`, p); got != perPartition {
			t.Errorf("partition %d: %d distinct offsets applied, want %d", p, got, perPartition)
		}
		if got := queryInt(t, pool, `SELECT count(*) FROM log WHERE partition = $1 AND by = 'rival'`, p); got == 0 {
			t.Errorf("partition %d: the rival applied nothing; the test did not fence", p)
		}
		if got := testutil.ToFloat64(c.m.conflicts.WithLabelValues(group, topic, strconv.Itoa(int(p)))); got != 1 {
			t.Errorf("partition %d: %v fencing conflicts, want 1", p, got)
		}
	}
	if got := queryInt(t, pool, `SELECT sum(v) FROM log`); got != 2*perPartition*(perPartition-1)/2 {
		t.Errorf("sum of values %d, want %d", got, 2*perPartition*(perPartition-1)/2)
	}
}
