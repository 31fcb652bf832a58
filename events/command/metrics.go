package command

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	commands       *prometheus.CounterVec
	batchSize      prometheus.Histogram
	batchSeconds   prometheus.Histogram
	batchFallbacks prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, name string) (*metrics, error) {
	l := prometheus.Labels{"handler": name}
	m := &metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keel_commands_total",
			Help: "Commands decided, by outcome (accepted, rejected; reused: the id named another command) and whether the id was seen before.", ConstLabels: l},
			[]string{"outcome", "replayed"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "keel_command_batch_size",
			Help: "Commands per transaction.", ConstLabels: l, Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "keel_command_batch_seconds",
			Help: "Time to lock, load, decide, append and commit a batch.", ConstLabels: l,
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		batchFallbacks: prometheus.NewCounter(prometheus.CounterOpts{Name: "keel_command_batch_fallbacks_total",
			Help: "Batches that failed and were re-run command by command.", ConstLabels: l}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.commands, m.batchSize, m.batchSeconds, m.batchFallbacks} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("command metrics: %w", err)
			}
		}
	}
	return m, nil
}
