package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/envelope"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/projections/readmodel"
)

// received is the test projection's one row per stream: units received.
type received struct {
	Stream   string
	SKU      string
	Quantity int64
}

var receivedTable = &readmodel.Table[received]{
	TableDef: readmodel.TableDef{
		Name:    "received",
		Columns: []readmodel.Column{{Name: "stream_id", Type: readmodel.Text}, {Name: "sku", Type: readmodel.Text}, {Name: "quantity", Type: readmodel.Int}},
		Key:     1,
	},
	Encode: func(r received) []any { return []any{r.Stream, r.SKU, r.Quantity} },
	Decode: func(v []any) (received, error) {
		return received{Stream: v[0].(string), SKU: v[1].(string), Quantity: v[2].(int64)}, nil
	},
}

// testProjection sums StockReceived per stream of the stock context. Its
// name is the test's own; its topic and group are the test's through
// KEEL_TOPIC_PREFIX (prefix), its store through --store.
type testProjection struct{ name, source, prefix string }

func newTestProjection() testProjection {
	return testProjection{name: uniq("kt_"), source: "stock", prefix: uniq("kt-") + "-"}
}

func (p testProjection) Name() string      { return p.name }
func (p testProjection) Sources() []string { return []string{p.source} }
func (p testProjection) Tables() []*readmodel.TableDef {
	return []*readmodel.TableDef{&receivedTable.TableDef}
}

func (p testProjection) Apply(ctx context.Context, rows readmodel.Rows, ev readmodel.Event) error {
	m, ok := ev.Message.(*stockv1.StockReceived)
	if !ok {
		return nil
	}
	r, _, err := receivedTable.Get(ctx, rows, ev.StreamID)
	if err != nil {
		return err
	}
	r.Stream, r.SKU, r.Quantity = ev.StreamID, m.GetSku(), r.Quantity+m.GetQuantity()
	return receivedTable.Put(ctx, rows, r)
}

// keelctlWith runs keelctl like keelctl does, with ps as the projection
// registry and the topic prefix of the first (a testProjection).
func keelctlWith(t *testing.T, ps []readmodel.Projection, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	e := &env{in: strings.NewReader(""), out: &out, errOut: &errOut,
		getenv: func(k string) string {
			switch k {
			case "KEEL_PG_URL":
				return testPGURL()
			case "KEEL_KAFKA_BROKERS":
				return strings.Join(testBrokers(), ",")
			case "KEEL_TOPIC_PREFIX":
				if len(ps) > 0 {
					return ps[0].(testProjection).prefix
				}
			}
			return ""
		},
		projections: func() []readmodel.Projection { return ps }}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := runWith(ctx, e, args)
	t.Logf("keelctl %s → %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return result{code, out.String(), errOut.String()}
}

func mustCodeWith(t *testing.T, ps []readmodel.Projection, want int, args ...string) result {
	t.Helper()
	r := keelctlWith(t, ps, args...)
	if r.code != want {
		t.Fatalf("keelctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, want, r.out, r.errOut)
	}
	return r
}

func openTestPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// oneStatus runs `projections status --json` with flags and returns the
// line of p.
func oneStatus(t *testing.T, p testProjection, flags ...string) statusJSON {
	t.Helper()
	r := mustCodeWith(t, []readmodel.Projection{p}, exitOK, append([]string{"projections", "status", "--json"}, flags...)...)
	var got []statusJSON
	for _, line := range strings.Split(strings.TrimSpace(r.out), "\n") {
		var s statusJSON
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatalf("status line %q: %v", line, err)
		}
		got = append(got, s)
	}
	if len(got) != 1 || got[0].Projection != p.name {
		t.Fatalf("status: %+v, want one line for %s", got, p.name)
	}
	return got[0]
}

func TestProjectionsStatus(t *testing.T) {
	p := newTestProjection()
	topic := p.prefix + "stock.events"
	freshTopics(t, 2, topic)
	freshTopics(t, 1, topic+".dlq")
	dbURL := freshDB(t)
	pool := openTestPool(t, dbURL)
	db := "--projections-database-url=" + dbURL

	// Before any builder: the projection is known, has no copy, and its
	// builder would have nothing to read.
	s := oneStatus(t, p, db)
	if !s.Known || s.Active != nil || s.Group != p.prefix+"projection."+p.name || s.Lag == nil || s.Lag.Events != 0 || len(s.Topics) != 1 || s.Topics[0].Topic != topic {
		t.Fatalf("status before the builder: %+v", s)
	}

	// Five events in one Kafka transaction, as the relay publishes: three
	// on partition 0, two on partition 1, each partition closed by a commit
	// marker.
	tx, err := kgo.NewClient(kgo.SeedBrokers(testBrokers()...), kgo.TransactionalID(uniq("keelctl-test-tx-")),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	ctx := context.Background()
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i, part := range []int32{0, 0, 0, 1, 1} {
		r := stockEvent(t, topic, fmt.Sprintf("SKU-%d", i), 1)
		r.Partition = part
		if err := tx.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}

	// The live builder applies them, then stops.
	bctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- readmodel.RunBuilders(bctx, readmodel.RunConfig{Brokers: testBrokers(), Pool: pool,
			TopicOf: func(c string) string { return p.prefix + c + ".events" },
			GroupOf: func(name string) string { return p.prefix + readmodel.Group(name) },
			KafkaOpts: []kgo.Opt{kgo.HeartbeatInterval(300 * time.Millisecond), kgo.SessionTimeout(6 * time.Second),
				kgo.FetchMaxWait(200 * time.Millisecond)}}, p)
	}()
	waitCheckpoints(t, pool, topic, 5, done) // next offsets 3 and 2
	stop()
	if err := <-done; err != nil {
		t.Fatalf("builders: %v", err)
	}
	var rows int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM rm_`+p.name+`_1.received`).Scan(&rows); err != nil || rows != 5 {
		t.Fatalf("the builder applied %d rows (%v), want 5", rows, err)
	}

	// Caught up: only the two commit markers are left, counted (an upper
	// bound) but recognised as no unapplied record.
	s = oneStatus(t, p, db)
	if s.Active == nil || s.Active.Schema != "rm_"+p.name+"_1" || s.Active.Generation != 1 || s.Active.ActivatedAt == "" || s.Building != nil {
		t.Fatalf("active copy: %+v", s)
	}
	if s.Lag.Events != 2 || s.Lag.Seconds != 0 || s.Lag.Oldest != "" || s.Lag.Unknown || len(s.Topics) != 1 {
		t.Fatalf("lag when caught up: %+v %+v", s.Lag, s.Topics)
	}
	want := []partitionJSON{{Partition: 0, Next: 3, Checkpointed: true, End: 4, Events: 1}, {Partition: 1, Next: 2, Checkpointed: true, End: 3, Events: 1}}
	if got := s.Topics[0].Partitions; fmt.Sprint(got) != fmt.Sprint(want) || s.Topics[0].Topic != topic {
		t.Fatalf("partitions when caught up: %+v, want %+v", got, want)
	}

	// Two more events on partition 1, produced 30 s ago by their clocks,
	// that the stopped builder has not applied.
	plain, err := kgo.NewClient(kgo.SeedBrokers(testBrokers()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	old := time.Now().Add(-30 * time.Second).Truncate(time.Millisecond)
	for i := range 2 {
		r := stockEvent(t, topic, fmt.Sprintf("SKU-late-%d", i), 1)
		r.Partition, r.Timestamp = 1, old.Add(time.Duration(i)*time.Second)
		if err := plain.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	s = oneStatus(t, p, db)
	if s.Lag.Events != 4 || s.Lag.Unknown || s.Lag.Seconds < 29 || s.Lag.Seconds > 300 {
		t.Fatalf("lag behind: %+v", s.Lag)
	}
	if oldest, err := time.Parse(time.RFC3339Nano, s.Lag.Oldest); err != nil || !oldest.Equal(old) {
		t.Fatalf("oldest unapplied = %q (%v), want %s (the record after the marker)", s.Lag.Oldest, err, old)
	}
	p1 := s.Topics[0].Partitions[1]
	if p1.Next != 2 || p1.End != 5 || p1.Events != 3 || p1.Oldest != s.Lag.Oldest || s.Topics[0].Partitions[0].Oldest != "" {
		t.Fatalf("partitions behind: %+v", s.Topics[0].Partitions)
	}

	// The table says the same.
	r := mustCodeWith(t, []readmodel.Projection{p}, exitOK, "projections", "status", db)
	for _, w := range []string{p.name, "rm_" + p.name + "_1", topic, p.prefix + "projection." + p.name, "upper bound"} {
		if !strings.Contains(r.out, w) {
			t.Errorf("status table lacks %q:\n%s", w, r.out)
		}
	}
}

// waitCheckpoints waits until the checkpoints of topic in pool sum to n,
// failing at once if the consumer stops (its result arrives on done, and
// is put back for the test's cleanup).
func waitCheckpoints(t *testing.T, pool *pgxpool.Pool, topic string, n int64, done chan error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("the consumer stopped: %v", err)
		default:
		}
		var sum int64
		err := pool.QueryRow(context.Background(), `SELECT coalesce(sum(next_offset), 0) FROM consumer_checkpoints WHERE topic = $1`, topic).Scan(&sum)
		if err == nil && sum == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoints of %s at %d of %d (%v)", topic, sum, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// appendReceived appends n StockReceived events to store st: streams
// SKU-0 … SKU-9, in turn, each event one more unit than the last.
func appendReceived(t *testing.T, st *pg.Store, n int) {
	t.Helper()
	reg := codec.All()
	ctx := context.Background()
	for i := range n {
		sku := fmt.Sprintf("SKU-%d", i%10)
		typ, payload, err := reg.Encode(&stockv1.StockReceived{Sku: sku, WarehouseId: "wh-1", Quantity: int64(i + 1), ReceivedAt: timestamppb.Now()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Append(ctx, "stock-"+sku, store.Any, []envelope.Event{{ID: ksuid.New(), Type: typ, Payload: payload}}); err != nil {
			t.Fatal(err)
		}
	}
}

// sumReceived is the rows and units in a copy of the test projection.
func sumReceived(t *testing.T, pool *pgxpool.Pool, schema string) (rows, units int64) {
	t.Helper()
	err := pool.QueryRow(context.Background(), `SELECT count(*), coalesce(sum(quantity), 0) FROM `+pgx.Identifier{schema, "received"}.Sanitize()).Scan(&rows, &units)
	if err != nil {
		t.Fatal(err)
	}
	return rows, units
}

func TestProjectionsRebuild(t *testing.T) {
	p := newTestProjection()
	ps := []readmodel.Projection{p}
	ctx := context.Background()
	srcURL := freshDB(t)
	srcPool := openTestPool(t, srcURL)
	st, err := pg.New(ctx, srcPool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const n = 100 // units 1 … 100 over 10 streams
	appendReceived(t, st, n)
	dbURL := freshDB(t)
	pool := openTestPool(t, dbURL)
	if _, err := readmodel.EnsureActive(ctx, pool, p); err != nil { // the live builder's empty copy
		t.Fatal(err)
	}
	args := []string{"projections", "rebuild", p.name, "--projections-database-url=" + dbURL, "--store", p.source + "=" + srcURL}

	mustCodeWith(t, ps, exitNotFound, "projections", "rebuild", "nope", "--yes", "--projections-database-url="+dbURL)
	r := mustCodeWith(t, ps, exitRefused, args...) // no terminal to ask, no --yes
	if !strings.Contains(r.errOut, "--yes") {
		t.Errorf("refusal does not say how: %s", r.errOut)
	}

	r = mustCodeWith(t, ps, exitOK, append(args, "--yes")...)
	schema := "rm_" + p.name + "_2"
	if !strings.Contains(r.out, "rebuilt "+p.name+": copy "+schema) || !strings.Contains(r.out, "100 events read") {
		t.Errorf("rebuild output: %s", r.out)
	}
	if !strings.Contains(r.errOut, "resumable") || !strings.Contains(r.errOut, "100.0%") || !strings.Contains(r.errOut, "events/s") ||
		!strings.Contains(r.errOut, "ETA") || strings.Contains(r.errOut, "\r") {
		t.Errorf("progress on a non-terminal: %q", r.errOut)
	}
	if rows, units := sumReceived(t, pool, schema); rows != 10 || units != n*(n+1)/2 {
		t.Errorf("rebuilt copy: %d rows, %d units; want 10, %d", rows, units, n*(n+1)/2)
	}
	s := oneStatus(t, p, "--projections-database-url="+dbURL)
	if s.Active == nil || s.Active.Schema != schema || s.Active.Generation != 2 || s.Active.EventsRead != n || s.Building != nil {
		t.Fatalf("status after the rebuild: %+v", s)
	}

	// A rebuild that stops half way (here: cancelled after its first
	// flush) is resumed by the next run, which says so.
	appendReceived(t, st, 20) // units 1 … 20 more
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, err = readmodel.Rebuild(cctx, p, readmodel.RebuildOptions{Pool: pool, Stores: map[string]*pg.Store{p.source: st},
		ReadBatch: 30, FlushEvery: 30, Progress: func(pr readmodel.Progress) {
			if pr.Read >= 60 {
				cancel()
			}
		}})
	if err == nil || cctx.Err() == nil {
		t.Fatalf("interrupted rebuild: %v", err)
	}
	// Its first flush came at 30 to 59 events (a read may return fewer
	// than asked while another transaction on the server holds the tail),
	// before the cancel at 60 or more.
	s = oneStatus(t, p, "--projections-database-url="+dbURL, "--store", p.source+"="+srcURL)
	if s.Building == nil || s.Building.Schema != "rm_"+p.name+"_3" || s.Building.EventsRead < 30 || s.Building.EventsRead >= 60 ||
		s.Building.Total == nil || *s.Building.Total != n+20 {
		t.Fatalf("status of the stopped rebuild: %+v", s.Building)
	}
	r = mustCodeWith(t, ps, exitOK, append(args, "--yes")...)
	if !strings.Contains(r.errOut, "resuming copy rm_"+p.name+"_3") ||
		!strings.Contains(r.errOut, fmt.Sprintf("%d events were read before", s.Building.EventsRead)) {
		t.Errorf("resume not said: %s", r.errOut)
	}
	if rows, units := sumReceived(t, pool, "rm_"+p.name+"_3"); rows != 10 || units != n*(n+1)/2+20*21/2 {
		t.Errorf("resumed copy: %d rows, %d units; want 10, %d", rows, units, n*(n+1)/2+20*21/2)
	}
	gens, err := readmodel.Generations(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, g := range gens {
		states = append(states, fmt.Sprintf("%d:%s", g.Number, g.State))
	}
	if got := strings.Join(states, " "); got != "3:active 2:retired" {
		t.Errorf("copies after two rebuilds: %s, want 3 active, 2 kept retired, 1 dropped", got)
	}
}
