package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consistency"
	"github.com/keel-commerce/keel/events/consume"
	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/relay"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/wire"
	"github.com/keel-commerce/keel/projections/orderdetail"
	"github.com/keel-commerce/keel/projections/orderhistory"
	"github.com/keel-commerce/keel/projections/readmodel"
)

// Milestones of one order on its way to the read models, from the start
// of the command (each is a time since then).
const (
	msCommitted     = iota // command.Execute returned: the events are committed
	msRelayRead            // the relay's subscription read it from the store
	msKafka                // a plain read-committed consumer received it
	msApplied              // order_history's live builder applied it (in its transaction)
	msVisible              // Waiter.Wait on order_history returned for the token
	msVisibleDetail        // Waiter.Wait on order_detail returned for the token
	msCount
)

var milestoneNames = [msCount]string{"committed", "relay_read", "kafka", "applied", "visible", "visible_detail"}

type visibleResult struct {
	achieved  float64 // orders/s placed in the measured window
	orders    int     // measured
	timeouts  int     // Waits that gave up (visibleMaxWait)
	ms        [msCount][]time.Duration
	ackP50    time.Duration // same-run Kafka produce→ack baseline
	ackP99    time.Duration
	relayGaps []time.Duration
	// The oldest xid-holding transaction outside the bench's two
	// databases, max over 50 ms samples, and the fraction of samples
	// with one older than 20 ms: it holds the store's tail back.
	foreignMax  time.Duration
	foreignOver float64
}

// tracker records the milestones of the orders in flight, by stream.
type tracker struct {
	mu     sync.Mutex
	start  map[string]time.Time
	marks  map[string]*[msCount]time.Time
	counts [msCount]int
}

func newTracker() *tracker {
	return &tracker{start: map[string]time.Time{}, marks: map[string]*[msCount]time.Time{}}
}

func (t *tracker) begin(stream string, at time.Time) {
	t.mu.Lock()
	t.start[stream] = at
	t.marks[stream] = &[msCount]time.Time{}
	t.mu.Unlock()
}

// mark records milestone m of stream now, the first time only.
func (t *tracker) mark(stream string, m int) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if ms := t.marks[stream]; ms != nil && ms[m].IsZero() {
		ms[m] = now
	}
}

// tracedProjection marks the moment its builder applies an order.
type tracedProjection struct {
	readmodel.Projection
	tr *tracker
}

func (p tracedProjection) Apply(ctx context.Context, rows readmodel.Rows, ev readmodel.Event) error {
	p.tr.mark(ev.StreamID, msApplied)
	return p.Projection.Apply(ctx, rows, ev)
}

// tracedSource marks the moment the relay's subscription reads an order.
type tracedSource struct {
	*pg.Store
	tr   *tracker
	mu   sync.Mutex
	gaps []time.Duration // between the relay's reads (NOTIFY wait, poll)
}

func (s *tracedSource) Subscribe(ctx context.Context, after envelope.Position, handle func(context.Context, []envelope.Event) error) error {
	last := time.Now()
	return s.Store.Subscribe(ctx, after, func(ctx context.Context, evs []envelope.Event) error {
		now := time.Now()
		for _, e := range evs {
			s.tr.mark(e.StreamID, msRelayRead)
		}
		s.mu.Lock()
		s.gaps = append(s.gaps, now.Sub(last))
		s.mu.Unlock()
		last = now
		return handle(ctx, evs)
	})
}

// visibleMaxWait bounds each Wait; an order not visible by then counts as
// a timeout and is left out of the quantiles.
const visibleMaxWait = 60 * time.Second

// counter is the aggregate state the bench's PlaceOrder command needs: the
// stream's version.
var counterAgg = command.Aggregate[int]{New: func(string) int { return 0 }, Apply: func(n int, _ proto.Message) int { return n + 1 }}

// benchVisible measures command-to-visible latency: a PlaceOrder command
// through events/command on a fresh orders store, the in-process relay to
// a fresh topic, the live builders of order_history and order_detail
// (readmodel.RunBuilders) on a fresh projections database, and a
// readmodel.Waiter waiting for the command's consistency token. Orders
// arrive at cfg.visibleRate for cfg.visibleDuration after the warm-up.
func benchVisible(ctx context.Context, cfg config) (visibleResult, error) {
	var res visibleResult
	pool, done, err := freshDB(ctx, 16)
	if err != nil {
		return res, err
	}
	defer done()
	proj, doneProj, err := freshDB(ctx, 24)
	if err != nil {
		return res, err
	}
	defer doneProj()
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		return res, err
	}
	defer st.Close()
	topic, deleteTopic, err := freshTopic(ctx, "keel-bench-visible", relayPartitions)
	if err != nil {
		return res, err
	}
	defer deleteTopic()
	deleteDLQ, err := createTopic(ctx, topic+consume.DefaultDLQSuffix, 1)
	if err != nil {
		return res, err
	}
	defer deleteDLQ()
	reg := codec.All()
	h, err := command.New(ctx, st, reg, counterAgg, command.Options{Name: "bench"})
	if err != nil {
		return res, err
	}
	defer h.Close()

	tr := newTracker()
	// Stopped in reverse order: builders and waiter, probe, relay.
	runCtx, stopAll := context.WithCancel(ctx)
	var running sync.WaitGroup
	defer func() { stopAll(); running.Wait() }()

	src := &tracedSource{Store: st, tr: tr}
	rl, err := relay.New(relay.Config{Source: src, Brokers: kafkaBrokers(), Topic: topic, EventSource: "keel/orders", Registerer: prometheus.NewRegistry()})
	if err != nil {
		return res, err
	}
	running.Go(func() { _ = rl.Run(runCtx) })

	// The probe: a plain consumer with the consumer runtime's fetch
	// settings (read committed, kgo's defaults otherwise), no group, no
	// database: when a record becomes readable on the broker.
	probe, err := kgo.NewClient(kgo.SeedBrokers(kafkaBrokers()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return res, err
	}
	running.Go(func() {
		defer probe.Close()
		for {
			fs := probe.PollFetches(runCtx)
			if runCtx.Err() != nil {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				if ev, err := wire.Event(r); err == nil {
					tr.mark(ev.StreamID, msKafka)
				}
			})
		}
	})

	history := tracedProjection{Projection: orderhistory.New(), tr: tr}
	detail := orderdetail.New()
	for _, p := range []readmodel.Projection{history, detail} {
		if _, err := readmodel.EnsureActive(ctx, proj, p); err != nil {
			return res, err
		}
	}
	group := "keel-bench-visible-" + randomSuffix()
	builders := make(chan error, 1)
	running.Go(func() {
		builders <- readmodel.RunBuilders(runCtx, readmodel.RunConfig{Brokers: kafkaBrokers(), Pool: proj, Registry: reg,
			TopicOf: func(string) string { return topic },
			GroupOf: func(p string) string { return group + "." + p }}, history, detail)
	})
	w := readmodel.NewWaiter(proj, nil)
	running.Go(func() { _ = w.Run(runCtx) })

	place := func(ctx context.Context, i int) (string, consistency.Token, error) {
		id := fmt.Sprintf("v%d-%s", i, ksuid.New().String()[20:])
		stream := "order-" + id
		placed := orderLife(newSeededRand(uint64(i)), id, time.Now())[0]
		tr.begin(stream, time.Now())
		r, err := h.Execute(ctx, command.Command[int]{ID: ksuid.New().String(), CorrelationID: "co-" + id, Streams: []string{stream},
			Fingerprint: command.Fingerprint{Kind: "PlaceOrder", Target: stream},
			Decide: func(map[string]int) (command.Decision, error) {
				return command.Decision{Events: map[string][]proto.Message{stream: {placed}}}, nil
			}})
		if err != nil {
			return stream, consistency.Token{}, err
		}
		tr.mark(stream, msCommitted)
		return stream, consistency.New("orders", r.Streams), nil
	}
	wait := func(ctx context.Context, p readmodel.Projection, stream string, tok consistency.Token, m int) error {
		err := w.Wait(ctx, p, tok, visibleMaxWait)
		if err == nil {
			tr.mark(stream, m)
		}
		return err
	}

	// Warm-up order: the builders have joined their groups and the
	// pipeline has carried one order end to end before the clock starts.
	stream, tok, err := place(ctx, -1)
	if err != nil {
		return res, fmt.Errorf("first order: %w", err)
	}
	for _, p := range []readmodel.Projection{history, detail} {
		werr := w.Wait(ctx, p, tok, 60*time.Second)
		select {
		case berr := <-builders:
			return res, fmt.Errorf("live builders stopped: %v", berr)
		default:
		}
		if werr != nil {
			return res, fmt.Errorf("first order %s never became visible in %s: %w", stream, p.Name(), werr)
		}
	}

	var mu sync.Mutex
	var firstErr error
	timeouts := 0
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		var behind *readmodel.BehindError
		if errors.As(err, &behind) {
			timeouts++
			return
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	foreign := sampleForeignXacts(ctx, pool.Config().ConnConfig.Database, proj.Config().ConnConfig.Database)
	defer foreign.stop()
	var orders sync.WaitGroup
	start := time.Now()
	from, to := start.Add(cfg.warm), start.Add(cfg.warm+cfg.visibleDuration)
	pace(ctx, cfg.visibleRate, cfg.warm+cfg.visibleDuration, func(i int64) {
		orders.Go(func() {
			stream, tok, err := place(ctx, int(i))
			if err != nil {
				fail(err)
				return
			}
			var both sync.WaitGroup
			both.Go(func() {
				if err := wait(ctx, history, stream, tok, msVisible); err != nil {
					fail(err)
				}
			})
			if err := wait(ctx, detail, stream, tok, msVisibleDetail); err != nil {
				fail(err)
			}
			both.Wait()
		})
	})
	orders.Wait()
	res.foreignMax, res.foreignOver = foreign.stop()
	if firstErr != nil {
		return res, firstErr
	}
	select {
	case berr := <-builders:
		return res, fmt.Errorf("live builders stopped: %v", berr)
	default:
	}
	res.timeouts = timeouts

	// Same-run baseline: the broker alone, produce→ack at the same rate.
	kcfg := cfg
	kcfg.rate, kcfg.relayDuration, kcfg.warm = cfg.visibleRate, 3*time.Second, 500*time.Millisecond
	_, acks, err := benchKafka(ctx, kcfg)
	if err != nil {
		return res, fmt.Errorf("kafka baseline: %w", err)
	}
	res.ackP50, res.ackP99 = quantile(acks, 0.5), quantile(acks, 0.99)

	tr.mu.Lock()
	defer tr.mu.Unlock()
	for stream, t0 := range tr.start {
		if t0.Before(from) || !t0.Before(to) {
			continue
		}
		res.orders++
		marks := tr.marks[stream]
		for m := range msCount {
			if !marks[m].IsZero() {
				res.ms[m] = append(res.ms[m], marks[m].Sub(t0))
			}
		}
	}
	for m := range msCount {
		slices.Sort(res.ms[m])
	}
	res.achieved = float64(res.orders) / cfg.visibleDuration.Seconds()
	src.mu.Lock()
	res.relayGaps = slices.Sorted(slices.Values(src.gaps))
	src.mu.Unlock()
	return res, nil
}
