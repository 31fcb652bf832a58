package consume

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the runtime's Prometheus series. Every series carries the
// group label, so consumers of several groups can share one registry.
type metrics struct {
	lag           *prometheus.GaugeVec     // group, topic, partition
	handleSeconds *prometheus.HistogramVec // group, topic
	handled       *prometheus.CounterVec   // group, topic
	retries       *prometheus.CounterVec   // group, topic, kind
	deadLetters   *prometheus.CounterVec   // group, topic
	commitSeconds *prometheus.HistogramVec // group
	conflicts     *prometheus.CounterVec   // group, topic, partition
}

// Retry kinds of the keel_consume_retries_total metric.
const (
	retryRecord = "record" // a failing record handled again
	retryBatch  = "batch"  // a batch redone after an infrastructure error
	retryDLQ    = "dlq"    // a dead-letter produce tried again
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "keel", Subsystem: "consume", Name: "lag_records",
			Help: "High watermark minus the checkpointed next offset, per partition, updated on each fetch.",
		}, []string{"group", "topic", "partition"}),
		handleSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "keel", Subsystem: "consume", Name: "handle_seconds",
			Help:    "Time one handler call took, successful or not.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"group", "topic"}),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keel", Subsystem: "consume", Name: "records_handled_total",
			Help: "Records whose effects were committed with their checkpoint.",
		}, []string{"group", "topic"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keel", Subsystem: "consume", Name: "retries_total",
			Help: "Retries, by kind: record (a failing record), batch (after an infrastructure error), dlq (a dead-letter produce).",
		}, []string{"group", "topic", "kind"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keel", Subsystem: "consume", Name: "dead_letters_total",
			Help: "Records produced to their dead-letter topic.",
		}, []string{"group", "topic"}),
		commitSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "keel", Subsystem: "consume", Name: "commit_seconds",
			Help:    "Time to write a batch's checkpoint and commit its transaction.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"group"}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keel", Subsystem: "consume", Name: "fencing_conflicts_total",
			Help: "Batches rolled back because the checkpoint had been moved by another member.",
		}, []string{"group", "topic", "partition"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.lag = register(reg, m.lag, &err)
	m.handleSeconds = register(reg, m.handleSeconds, &err)
	m.handled = register(reg, m.handled, &err)
	m.retries = register(reg, m.retries, &err)
	m.deadLetters = register(reg, m.deadLetters, &err)
	m.commitSeconds = register(reg, m.commitSeconds, &err)
	m.conflicts = register(reg, m.conflicts, &err)
	return m, err
}

// register registers c, or returns the identical collector that another
// consumer of the same process registered first.
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errp *error) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		*errp = errors.Join(*errp, err)
	}
	return c
}
