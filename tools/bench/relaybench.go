package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/relay"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/wire"
)

const relayPartitions = 6

// pace calls emit(i) for i = 0, 1, … so that by elapsed time t, rate·t
// calls have been made (checked every millisecond), until total has passed.
// emit may block; then the offered rate falls behind, and the caller's
// achieved rate shows it.
func pace(ctx context.Context, rate float64, total time.Duration, emit func(i int64)) int64 {
	start := time.Now()
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	var issued int64
	for ctx.Err() == nil {
		el := time.Since(start)
		if el >= total {
			break
		}
		for due := int64(el.Seconds() * rate); issued < due; issued++ {
			emit(issued)
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return issued
}

type relayResult struct {
	offered, achieved float64 // events/s in the measured window
	lag               []time.Duration
	histP50, histP99  float64 // seconds, from keel_relay_delivery_seconds
	appendP99         time.Duration
	delivered         int
	restarts          float64
	phases            phaseSummary
	foreignMax        time.Duration // oldest transaction with an xid in another database, max over samples
	foreignOver       float64       // fraction of samples where one was older than 20 ms
}

// benchRelay runs an in-process relay from a fresh store to a fresh topic
// while a paced appender offers cfg.rate single-event appends per second,
// and a separate consumer measures each event's arrival minus its
// recorded_at (the store's commit-time stamp).
func benchRelay(ctx context.Context, cfg config) (relayResult, error) {
	const appenders = 48
	// appenders + the relay's LISTEN connection (held for good) + the
	// relay's reads/checkpoints + lag watcher + the store's NOTIFY sender.
	pool, done, err := freshDB(ctx, appenders+8)
	if err != nil {
		return relayResult{}, err
	}
	defer done()
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		return relayResult{}, err
	}
	defer st.Close()
	topic, deleteTopic, err := freshTopic(ctx, "keel-bench-relay", relayPartitions)
	if err != nil {
		return relayResult{}, err
	}
	defer deleteTopic()

	reg := prometheus.NewRegistry()
	src := &timedSource{Store: st}
	rl, err := relay.New(relay.Config{Source: src, Brokers: kafkaBrokers(), Topic: topic, EventSource: "keel/bench", Registerer: reg})
	if err != nil {
		return relayResult{}, err
	}
	rctx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- rl.Run(rctx) }()
	defer func() { stopRelay(); <-relayDone }()

	// The downstream consumer.
	cons, err := kgo.NewClient(kgo.SeedBrokers(kafkaBrokers()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(500*time.Millisecond),
		// As every Keel consumer: the relay writes in transactions.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return relayResult{}, err
	}
	defer cons.Close()
	var (
		mu       sync.Mutex
		lags     []time.Duration
		received atomic.Int64
		from, to time.Time // measured window of recorded times
	)
	cctx, stopCons := context.WithCancel(ctx)
	consDone := make(chan struct{})
	go func() {
		defer close(consDone)
		for {
			fs := cons.PollFetches(cctx)
			arrived := time.Now()
			if cctx.Err() != nil {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				received.Add(1)
				ev, err := wire.Event(r)
				if err != nil {
					return
				}
				mu.Lock()
				if !ev.RecordedAt.Before(from) && ev.RecordedAt.Before(to) {
					lags = append(lags, arrived.Sub(ev.RecordedAt))
				}
				mu.Unlock()
			})
		}
	}()
	defer func() { stopCons(); <-consDone }()

	// Transactions anywhere on the server hold the relay's tail back (the
	// log is read below the snapshot's xmin, and xids are cluster-wide), so
	// sample the oldest one outside this database: other tests on a shared
	// server show up here.
	foreign := sampleForeignXacts(ctx, pool.Config().ConnConfig.Database)
	defer foreign.stop()

	// The paced appender: one token per event, workers append single
	// events to their own streams with exact expected versions.
	start := time.Now()
	mu.Lock()
	from, to = start.Add(cfg.warm), start.Add(cfg.warm+cfg.relayDuration)
	mu.Unlock()
	tokens := make(chan int64, 4096)
	var appended, inWindow atomic.Int64
	var appendErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	appendLats := make([][]time.Duration, appenders)
	for w := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			versions := make([]int64, streamsPerWriter)
			i := 0
			for range tokens {
				s := i % streamsPerWriter
				t0 := time.Now()
				res, err := st.Append(ctx, fmt.Sprintf("stock-relay-w%02d-%03d", w, s), store.Exact(versions[s]), newEvents(1, i))
				t1 := time.Now()
				if err != nil {
					errOnce.Do(func() { appendErr = err })
					continue
				}
				versions[s] = res.Version
				appended.Add(1)
				if !t0.Before(from) && !t1.After(to) {
					inWindow.Add(1)
					appendLats[w] = append(appendLats[w], t1.Sub(t0))
				}
				i++
			}
		}()
	}
	var histStart *dto.Histogram
	warmTimer := time.AfterFunc(cfg.warm, func() {
		h, _ := relayHistogram(reg)
		mu.Lock()
		histStart = h
		mu.Unlock()
	})
	defer warmTimer.Stop()
	pace(ctx, cfg.rate, cfg.warm+cfg.relayDuration, func(i int64) {
		select {
		case tokens <- i:
		case <-ctx.Done():
		}
	})
	close(tokens)
	wg.Wait()
	if appendErr != nil {
		return relayResult{}, fmt.Errorf("paced append: %w", appendErr)
	}
	// Wait until the consumer has seen every appended event.
	deadline := time.Now().Add(30 * time.Second)
	for received.Load() < appended.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	if got, want := received.Load(), appended.Load(); got < want {
		return relayResult{}, fmt.Errorf("consumer received %d of %d events within 30s after the appends", got, want)
	}
	histEnd, err := relayHistogram(reg)
	if err != nil {
		return relayResult{}, err
	}
	mu.Lock()
	defer mu.Unlock()
	res := relayResult{
		offered:   cfg.rate,
		achieved:  float64(inWindow.Load()) / cfg.relayDuration.Seconds(),
		lag:       slices.Sorted(slices.Values(lags)),
		delivered: len(lags),
	}
	var all []time.Duration
	for _, l := range appendLats {
		all = append(all, l...)
	}
	slices.Sort(all)
	res.appendP99 = quantile(all, 0.99)
	res.histP50 = histQuantile(histStart, histEnd, 0.50)
	res.histP99 = histQuantile(histStart, histEnd, 0.99)
	res.restarts = counterValue(reg, "keel_relay_restarts_total")
	res.phases = src.summary()
	res.foreignMax, res.foreignOver = foreign.stop()
	return res, nil
}

func relayHistogram(reg *prometheus.Registry) (*dto.Histogram, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	for _, mf := range mfs {
		if mf.GetName() == "keel_relay_delivery_seconds" && len(mf.Metric) == 1 {
			return mf.Metric[0].GetHistogram(), nil
		}
	}
	return nil, errors.New("keel_relay_delivery_seconds not registered")
}

func counterValue(reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return math.NaN()
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			return mf.Metric[0].GetCounter().GetValue()
		}
	}
	return math.NaN()
}

// histQuantile estimates the q-quantile of the observations made between
// two snapshots of a cumulative histogram, interpolating linearly inside
// the bucket (as Prometheus' histogram_quantile does).
func histQuantile(a, b *dto.Histogram, q float64) float64 {
	if b == nil {
		return math.NaN()
	}
	type bk struct {
		ub float64
		n  float64
	}
	var bs []bk
	for i, x := range b.GetBucket() {
		n := float64(x.GetCumulativeCount())
		if a != nil && i < len(a.GetBucket()) {
			n -= float64(a.GetBucket()[i].GetCumulativeCount())
		}
		bs = append(bs, bk{x.GetUpperBound(), n})
	}
	total := float64(b.GetSampleCount())
	if a != nil {
		total -= float64(a.GetSampleCount())
	}
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	prevUB, prevN := 0.0, 0.0
	for _, x := range bs {
		if x.n >= rank {
			if x.n == prevN {
				return x.ub
			}
			return prevUB + (x.ub-prevUB)*(rank-prevN)/(x.n-prevN)
		}
		prevUB, prevN = x.ub, x.n
	}
	return math.Inf(1) // beyond the last bucket
}

// benchKafka is the broker baseline: single records (the relay's record
// shape: an event's CloudEvents headers and a ~200-byte value) produced at
// cfg.rate with franz-go directly, acks=all, idempotent, no linger, lz4 as
// the relay; latency is Produce call to acknowledgement.
func benchKafka(ctx context.Context, cfg config) (achieved float64, lats []time.Duration, err error) {
	topic, deleteTopic, err := freshTopic(ctx, "keel-bench-kafka", relayPartitions)
	if err != nil {
		return 0, nil, err
	}
	defer deleteTopic()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkaBrokers()...), kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0), kgo.RecordDeliveryTimeout(time.Minute),
		kgo.ProducerBatchCompression(kgo.Lz4Compression(), kgo.NoCompression()))
	if err != nil {
		return 0, nil, err
	}
	defer cl.Close()
	// Connect and learn the partitions before the clock starts.
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("warm-up")}).FirstErr(); err != nil {
		return 0, nil, fmt.Errorf("kafka warm-up produce: %w", err)
	}
	start := time.Now()
	from, to := start.Add(cfg.warm), start.Add(cfg.warm+cfg.relayDuration)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	pace(ctx, cfg.rate, cfg.warm+cfg.relayDuration, func(i int64) {
		ev := newEvents(1, int(i))[0]
		ev.StreamID = fmt.Sprintf("stock-kafka-%04d", i%4800)
		ev.Version = i/4800 + 1
		ev.Position = envelope.Position{Tx: uint64(i + 1000), Global: i + 1}
		ev.ID = ksuid.New()
		t0 := time.Now()
		ev.RecordedAt = t0
		wg.Add(1)
		cl.Produce(ctx, wire.Record(topic, "keel/bench", ev), func(_ *kgo.Record, err error) {
			defer wg.Done()
			t1 := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			if !t0.Before(from) && t0.Before(to) {
				lats = append(lats, t1.Sub(t0))
			}
		})
	})
	wg.Wait()
	if firstErr != nil {
		return 0, nil, fmt.Errorf("kafka produce: %w", firstErr)
	}
	slices.Sort(lats)
	return float64(len(lats)) / cfg.relayDuration.Seconds(), lats, nil
}

// timedSource wraps the store the relay reads to show where the relay's
// time goes: in the store (read, held-tail check, waiting for a NOTIFY:
// the gap between two batches), in publishing a batch (produce + acks), and
// in saving the checkpoint (a commit).
type timedSource struct {
	*pg.Store
	mu         sync.Mutex
	gaps       []time.Duration
	publish    []time.Duration
	checkpoint []time.Duration
	sizes      []int
}

func (t *timedSource) Subscribe(ctx context.Context, after envelope.Position, handle func(context.Context, []envelope.Event) error) error {
	last := time.Now()
	return t.Store.Subscribe(ctx, after, func(ctx context.Context, evs []envelope.Event) error {
		t0 := time.Now()
		err := handle(ctx, evs)
		t1 := time.Now()
		t.mu.Lock()
		t.gaps = append(t.gaps, t0.Sub(last))
		t.publish = append(t.publish, t1.Sub(t0))
		t.sizes = append(t.sizes, len(evs))
		t.mu.Unlock()
		last = t1
		return err
	})
}

func (t *timedSource) SaveCheckpoint(ctx context.Context, reader string, p envelope.Position) error {
	t0 := time.Now()
	err := t.Store.SaveCheckpoint(ctx, reader, p)
	t.mu.Lock()
	t.checkpoint = append(t.checkpoint, time.Since(t0))
	t.mu.Unlock()
	return err
}

type phaseSummary struct {
	batches                      int
	meanBatch                    float64
	gapP50, gapP99               time.Duration
	publishP50, publishP99       time.Duration // includes the checkpoint
	checkpointP50, checkpointP99 time.Duration
}

func (t *timedSource) summary() phaseSummary {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := phaseSummary{batches: len(t.sizes)}
	n := 0
	for _, x := range t.sizes {
		n += x
	}
	if s.batches > 0 {
		s.meanBatch = float64(n) / float64(s.batches)
	}
	g, p, c := slices.Sorted(slices.Values(t.gaps)), slices.Sorted(slices.Values(t.publish)), slices.Sorted(slices.Values(t.checkpoint))
	s.gapP50, s.gapP99 = quantile(g, 0.5), quantile(g, 0.99)
	s.publishP50, s.publishP99 = quantile(p, 0.5), quantile(p, 0.99)
	s.checkpointP50, s.checkpointP99 = quantile(c, 0.5), quantile(c, 0.99)
	return s
}

// xactSampler samples, every 50 ms, the oldest transaction holding an xid
// in a database other than the given ones: on a shared server it holds
// every store's tail back (the log is read below the snapshot's xmin, and
// xids are cluster-wide).
type xactSampler struct {
	mu          sync.Mutex
	n, over     int
	maxAge      time.Duration
	stopSampler context.CancelFunc
	done        chan struct{}
}

func sampleForeignXacts(ctx context.Context, own ...string) *xactSampler {
	sctx, stop := context.WithCancel(ctx)
	s := &xactSampler{stopSampler: stop, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		c, err := pgx.Connect(sctx, pgURL())
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			var age float64
			if err := c.QueryRow(sctx, `SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)::float8
FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND NOT (coalesce(datname, '') = ANY($1))`, own).Scan(&age); err != nil {
				continue
			}
			d := time.Duration(age * float64(time.Second))
			s.mu.Lock()
			s.n++
			s.maxAge = max(s.maxAge, d)
			if d > 20*time.Millisecond {
				s.over++
			}
			s.mu.Unlock()
		}
	}()
	return s
}

// stop ends the sampling and returns the oldest transaction seen and the
// fraction of samples with one older than 20 ms.
func (s *xactSampler) stop() (time.Duration, float64) {
	s.stopSampler()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == 0 {
		return s.maxAge, 0
	}
	return s.maxAge, float64(s.over) / float64(s.n)
}
