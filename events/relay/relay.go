// Package relay publishes a service's event store to its Kafka topic, in
// order, without dual writes: the store is the only thing a command writes,
// and the relay tails it from a durable checkpoint.
//
// Delivery is at least once and in stream order, for consumers that read
// committed records only. The relay produces each batch in one Kafka
// transaction (acks=all), commits it, and only then moves its checkpoint. A crash at
// any point resends the events after the last checkpoint, in the same order,
// so a consumer may see a tail of a stream twice (v5 v6 v5 v6 v7) but never
// a gap or a version out of order. Consumers dedupe by event id.
//
// Records are keyed by stream id, so a stream stays in one partition; the
// envelope travels as CloudEvents binary-mode headers (package wire).
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/wire"
)

// Source is what the relay needs of an event store: the ordered log, its
// head, and a durable checkpoint per reader. *pg.Store implements it.
type Source interface {
	Subscribe(ctx context.Context, after envelope.Position, handle func(context.Context, []envelope.Event) error) error
	Head(ctx context.Context) (envelope.Position, time.Time, error)
	Checkpoint(ctx context.Context, reader string) (envelope.Position, error)
	SaveCheckpoint(ctx context.Context, reader string, p envelope.Position) error
}

// Config configures a Relay.
type Config struct {
	Source  Source
	Brokers []string
	// Topic receives the events, e.g. "stock.events". It must exist.
	Topic string
	// Route, when set, picks each event's topic instead (an outbox whose
	// commands go to several <context>.commands topics); "" means Topic.
	// Per-key order holds within each topic.
	Route func(envelope.Event) string
	// EventSource is the CloudEvents source, e.g. "keel/stock".
	EventSource string
	// Name is the checkpoint's name in the store; default "relay:"+Topic.
	Name string
	// TransactionalID is the Kafka transactional id; default
	// "keel-relay-"+Name. Two relays of one store must share it.
	TransactionalID string
	Logger          *slog.Logger
	Registerer      prometheus.Registerer
	// LagInterval is how often the lag gauges are refreshed; default 1s.
	LagInterval time.Duration
	// KafkaOpts are added to the producer's options (tests, TLS, SASL).
	KafkaOpts []kgo.Opt
}

func (c *Config) setDefaults() {
	if c.Name == "" {
		c.Name = "relay:" + c.Topic
	}
	if c.TransactionalID == "" {
		c.TransactionalID = "keel-relay-" + c.Name
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.LagInterval <= 0 {
		c.LagInterval = time.Second
	}
}

// Validate reports a config the relay cannot run with.
func (c Config) Validate() error {
	var errs []error
	if c.Source == nil {
		errs = append(errs, errors.New("no source"))
	}
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("no brokers"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("no topic"))
	}
	if c.EventSource == "" {
		errs = append(errs, errors.New("no event source"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("relay config: %w", err)
	}
	return nil
}

// Relay tails a store and publishes to Kafka. Run one per store: a second
// one with the same transactional id fences the first, which restarts and
// fences it back, so they take turns; nothing is lost either way.
type Relay struct {
	cfg     Config
	m       *metrics
	relayed atomic.Pointer[envelope.Event] // last event acknowledged by the broker
	acked   chan struct{}                  // pokes the checkpoint saver
}

// New validates cfg and registers the relay's metrics.
func New(cfg Config) (*Relay, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer, cfg.Topic)
	if err != nil {
		return nil, err
	}
	return &Relay{cfg: cfg, m: m, acked: make(chan struct{}, 1)}, nil
}

// Run publishes until ctx ends, then returns nil. Failures (broker or
// database unreachable, a produce error) restart it from the checkpoint
// with backoff; they are logged and counted, not returned.
func (r *Relay) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.watchLag(ctx) }()
	go func() { defer wg.Done(); r.saveCheckpoints(ctx) }()
	defer wg.Wait()

	for attempt := 0; ; attempt++ {
		err := r.runOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		r.m.restarts.Inc()
		wait := min(time.Duration(1<<min(attempt, 6))*50*time.Millisecond, 5*time.Second)
		wait = wait/2 + rand.N(wait/2+1)
		r.cfg.Logger.Warn("relay restarting from its checkpoint", "topic", r.cfg.Topic, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		if err == nil {
			attempt = 0
		}
	}
}

// newClient makes the transactional producer of one attempt. A fresh
// client per attempt fences the previous one: whatever it left open is
// aborted before the resend starts.
func (r *Relay) newClient() (*kgo.Client, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(r.cfg.Brokers...),
		kgo.DefaultProduceTopic(r.cfg.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// publish flushes each transaction itself.
		kgo.ManualFlushing(),
		kgo.RecordDeliveryTimeout(time.Minute),
		// One transactional id per relay: a restarted relay (or a second
		// one) fences the previous producer and aborts its open transaction.
		kgo.TransactionalID(r.cfg.TransactionalID),
		kgo.TransactionTimeout(time.Minute),
		kgo.ProducerBatchCompression(kgo.Lz4Compression(), kgo.NoCompression()),
	}, r.cfg.KafkaOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("relay %s: kafka client: %w", r.cfg.Topic, err)
	}
	return cl, nil
}

func (r *Relay) runOnce(ctx context.Context) error {
	cl, err := r.newClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	from, err := r.cfg.Source.Checkpoint(ctx, r.cfg.Name)
	if err != nil {
		return err
	}
	r.cfg.Logger.Info("relay starting", "topic", r.cfg.Topic, "from", from.String())

	// Reading and producing overlap: the subscription reads the next batch
	// while the previous one is produced. Batches are published one at a
	// time, in order; the first failure stops both.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan []envelope.Event, 1)
	failed := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for evs := range batches {
			if err := r.publish(ctx, cl, evs); err != nil {
				failed <- err
				cancel()
				return
			}
		}
	}()
	err = r.cfg.Source.Subscribe(ctx, from, func(ctx context.Context, evs []envelope.Event) error {
		select {
		case batches <- evs:
			return nil
		case err := <-failed:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(batches)
	<-done
	select {
	case perr := <-failed:
		return perr
	default:
		return err
	}
}

// publish produces evs in one Kafka transaction, commits it, then lets the
// checkpoint move. Any failure returns before the checkpoint moves.
//
// The transaction is what keeps a stream in order across failures. Without
// it, a partition's first batch could fail for good while a later batch of
// the same partition, already on its way, succeeds: a broker accepts any
// sequence number from a producer it has not seen on that partition, so
// version 12 would land without 1 to 11 in front of it. Inside a
// transaction a failure aborts everything the attempt wrote, and
// read-committed consumers never see it; the resend from the checkpoint
// starts a clean transaction. Consumers must read with
// isolation.level=read_committed (the default of librdkafka and of
// Keel's consumer runtime).
func (r *Relay) publish(ctx context.Context, cl *kgo.Client, evs []envelope.Event) error {
	if err := cl.BeginTransaction(); err != nil {
		return fmt.Errorf("relay %s: begin transaction: %w", r.cfg.Topic, err)
	}
	var mu sync.Mutex
	var firstErr error
	for i := range evs {
		topic := r.cfg.Topic
		if r.cfg.Route != nil {
			if t := r.cfg.Route(evs[i]); t != "" {
				topic = t
			}
		}
		cl.Produce(ctx, wire.Record(topic, r.cfg.EventSource, evs[i]), func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	ferr := cl.Flush(ctx)
	mu.Lock()
	perr := errors.Join(firstErr, ferr)
	mu.Unlock()
	commit := kgo.TryCommit
	if perr != nil {
		commit = kgo.TryAbort
	}
	if err := errors.Join(perr, cl.EndTransaction(ctx, commit)); err != nil {
		return fmt.Errorf("relay %s: produce: %w", r.cfg.Topic, err)
	}
	// Visible to read-committed consumers from now on.
	done := time.Now()
	for i := range evs {
		r.m.delivery.Observe(done.Sub(evs[i].RecordedAt).Seconds())
	}
	last := evs[len(evs)-1]
	r.m.published.Add(float64(len(evs)))
	r.relayed.Store(&last)
	select {
	case r.acked <- struct{}{}:
	default:
	}
	return nil
}

// saveCheckpoints moves the durable checkpoint to the last acknowledged
// event, off the publishing path: one save at a time, coalescing whatever
// was acknowledged meanwhile. The checkpoint only ever names acknowledged
// events, so a crash resends a longer tail at worst, never skips one.
func (r *Relay) saveCheckpoints(ctx context.Context) {
	var saved envelope.Position
	for {
		select {
		case <-ctx.Done():
			// Record the final position on a clean stop, so a restart
			// resends nothing.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if last, ok := r.Relayed(); ok && last.Position != saved {
				_ = r.cfg.Source.SaveCheckpoint(sctx, r.cfg.Name, last.Position)
			}
			cancel()
			return
		case <-r.acked:
		}
		last, ok := r.Relayed()
		if !ok || last.Position == saved {
			continue
		}
		if err := r.cfg.Source.SaveCheckpoint(ctx, r.cfg.Name, last.Position); err != nil {
			if ctx.Err() == nil {
				r.cfg.Logger.Warn("relay checkpoint not saved; a restart will resend more", "topic", r.cfg.Topic, "err", err)
			}
			continue
		}
		saved = last.Position
	}
}

// Relayed returns the last event the broker acknowledged and the relay
// checkpointed in this process (ok false before the first).
func (r *Relay) Relayed() (envelope.Event, bool) {
	e := r.relayed.Load()
	if e == nil {
		return envelope.Event{}, false
	}
	return *e, true
}

// Metric returns one of the relay's collectors by short name (published,
// restarts, delivery, lag_events, lag_seconds), for tests and tools; nil for
// an unknown name.
func (r *Relay) Metric(name string) prometheus.Collector {
	switch name {
	case "published":
		return r.m.published
	case "restarts":
		return r.m.restarts
	case "delivery":
		return r.m.delivery
	case "lag_events":
		return r.m.lagEvents
	case "lag_seconds":
		return r.m.lagSeconds
	}
	return nil
}

// watchLag refreshes the lag gauges: events and seconds between the
// store's head and what has been relayed. A long-running transaction holds
// the relay back; this is where it shows.
func (r *Relay) watchLag(ctx context.Context) {
	t := time.NewTicker(r.cfg.LagInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		head, at, err := r.cfg.Source.Head(ctx)
		if err != nil {
			continue
		}
		last, _ := r.Relayed()
		if last.Position.Global == 0 {
			if last.Position, err = r.cfg.Source.Checkpoint(ctx, r.cfg.Name); err != nil {
				continue
			}
		}
		lag := max(0, head.Global-last.Position.Global)
		r.m.lagEvents.Set(float64(lag))
		secs := 0.0
		if lag > 0 && !last.RecordedAt.IsZero() {
			secs = max(0, at.Sub(last.RecordedAt).Seconds())
		} else if lag > 0 {
			secs = max(0, time.Since(at).Seconds())
		}
		r.m.lagSeconds.Set(secs)
	}
}

type metrics struct {
	published  prometheus.Counter
	restarts   prometheus.Counter
	delivery   prometheus.Histogram
	lagEvents  prometheus.Gauge
	lagSeconds prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, topic string) (*metrics, error) {
	l := prometheus.Labels{"topic": topic}
	m := &metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "keel_relay_published_total",
			Help: "Events acknowledged by Kafka and checkpointed.", ConstLabels: l}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{Name: "keel_relay_restarts_total",
			Help: "Times the relay restarted from its checkpoint after a failure.", ConstLabels: l}),
		delivery: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "keel_relay_delivery_seconds",
			Help:    "From an event's commit in the store (recorded time) to the commit of its Kafka transaction.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), ConstLabels: l}),
		lagEvents: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keel_relay_lag_events",
			Help: "Store head position minus the last relayed position.", ConstLabels: l}),
		lagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keel_relay_lag_seconds",
			Help: "Recorded time of the store head minus that of the last relayed event.", ConstLabels: l}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.published, m.restarts, m.delivery, m.lagEvents, m.lagSeconds} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("relay metrics: %w", err)
			}
		}
	}
	return m, nil
}
