package relay_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/relay"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/store/storetest"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/events/wire"
)

// TestProduceFailuresLoseNothing (kfake): the broker refuses produce
// requests with a non-retriable error several times while events are
// appended; the relay restarts from its checkpoint each time, and in the
// end every event is in the topic, each stream in order.
func TestProduceFailuresLoseNothing(t *testing.T) {
	const topic = "orders.events"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic))
	testenv.Must(t, err, "kfake cluster")
	t.Cleanup(cluster.Close)
	st, err := pg.New(context.Background(), testenv.Pool(t), pg.Options{HeldPoll: time.Millisecond})
	testenv.Must(t, err, "store")
	t.Cleanup(st.Close)

	reg := prometheus.NewRegistry()
	rl, err := relay.New(relay.Config{Source: st, Brokers: cluster.ListenAddrs(), Topic: topic,
		EventSource: "keel/orders", Registerer: reg, LagInterval: 20 * time.Millisecond})
	testenv.Must(t, err, "relay")
	fault := cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.InvalidRecord, Count: 5})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rl.Run(ctx) }()

	const n = 300
	for i := range n {
		if _, err := st.Append(ctx, fmt.Sprintf("order-%d", i%10), store.Any, storetest.Events(1)); err != nil {
			t.Fatal(err)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	testenv.Must(t, fault.Wait(wctx, 5), "produce to fail 5 times")

	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	testenv.Must(t, err, "consumer")
	defer cl.Close()
	seen := map[string]bool{}
	maxVer := map[string]int64{}
	for len(seen) < n {
		fs := cl.PollFetches(wctx)
		if wctx.Err() != nil {
			t.Fatalf("only %d of %d events reached the topic", len(seen), n)
		}
		fs.EachRecord(func(r *kgo.Record) {
			ev, err := wire.Event(r)
			testenv.Must(t, err, "decode")
			if ev.Version > maxVer[ev.StreamID]+1 {
				t.Fatalf("stream %s: version %d after %d", ev.StreamID, ev.Version, maxVer[ev.StreamID])
			}
			maxVer[ev.StreamID] = max(maxVer[ev.StreamID], ev.Version)
			seen[ev.ID.String()] = true
		})
	}
	if got := testutil.ToFloat64(rl.Metric("restarts")); got < 1 {
		t.Errorf("restarts metric %v, want ≥ 1 after refused produces", got)
	}

	// A transaction left open holds the relay back, and the lag shows it.
	held, err := st.Pool().Begin(ctx)
	testenv.Must(t, err, "begin")
	t.Cleanup(func() { _ = held.Rollback(context.Background()) })
	_, err = st.AppendTx(ctx, held, "held", store.NoStream, storetest.Events(1))
	testenv.Must(t, err, "append held")
	for range 5 {
		_, err := st.Append(ctx, "after", store.Any, storetest.Events(1))
		testenv.Must(t, err, "append after")
	}
	waitMetric(t, rl, "lag_events", func(v float64) bool { return v >= 6 })
	testenv.Must(t, held.Commit(ctx), "commit held")
	st.Notify()
	waitMetric(t, rl, "lag_events", func(v float64) bool { return v == 0 })
	if e, ok := rl.Relayed(); !ok || e.Position == (envelope.Position{}) {
		t.Errorf("relayed = %+v, %v", e, ok)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
}

func waitMetric(t *testing.T, rl *relay.Relay, name string, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		v := testutil.ToFloat64(rl.Metric(name))
		if ok(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metric %s stuck at %v", name, v)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
