package timers

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are one queue's series, labelled timers=<name>; a process runs
// one queue per name.
type metrics struct {
	fired, failures prometheus.Counter
	due, age        prometheus.Gauge
}

func newMetrics(name string, reg prometheus.Registerer) (*metrics, error) {
	opts := func(metric, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "keel", Subsystem: "timers", Name: metric, Help: help,
			ConstLabels: prometheus.Labels{"timers": name}}
	}
	m := &metrics{
		fired:    prometheus.NewCounter(prometheus.CounterOpts(opts("fired_total", "Timers fired (a replayed or already decided command not counted)."))),
		failures: prometheus.NewCounter(prometheus.CounterOpts(opts("failures_total", "Timer firings that failed and were backed off."))),
		due:      prometheus.NewGauge(prometheus.GaugeOpts(opts("due", "Timers due and not yet fired, backing-off ones included, at the last refresh."))),
		age:      prometheus.NewGauge(prometheus.GaugeOpts(opts("oldest_due_age_seconds", "How long the oldest due timer has been due, at the last refresh (0: none)."))),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	for _, c := range []prometheus.Collector{m.fired, m.failures, m.due, m.age} {
		err = errors.Join(err, reg.Register(c))
	}
	return m, err
}
