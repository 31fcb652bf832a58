package pg

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keel-commerce/keel/events/store"
)

type metrics struct {
	appends   *prometheus.CounterVec
	events    prometheus.Counter
	latency   prometheus.Histogram
	conflicts prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keel_store_appends_total", Help: "Appends by outcome (ok, conflict, error).",
		}, []string{"outcome"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keel_store_appended_events_total", Help: "Events written by successful appends.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "keel_store_append_seconds", Help: "Append latency, including conflicts.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keel_store_append_conflicts_total", Help: "Appends refused for a version conflict.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.appends, m.events, m.latency, m.conflicts} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("event store metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(start time.Time, n int, err error) {
	m.latency.Observe(time.Since(start).Seconds())
	switch {
	case err == nil:
		m.appends.WithLabelValues("ok").Inc()
		m.events.Add(float64(n))
	case store.IsConflict(err):
		m.appends.WithLabelValues("conflict").Inc()
	default:
		m.appends.WithLabelValues("error").Inc()
	}
}
