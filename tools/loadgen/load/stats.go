package load

import (
	"math"
	"slices"
	"time"
)

// Quantile is the q-quantile (nearest rank) of sorted durations: the
// smallest value with at least q of the values at or below it; 0 for none.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Latency summarizes durations in milliseconds.
type Latency struct {
	N     int     `json:"n"`
	P50ms float64 `json:"p50_ms"`
	P90ms float64 `json:"p90_ms"`
	P99ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// Summarize sorts a copy of ds and returns its percentiles.
func Summarize(ds []time.Duration) Latency {
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return Latency{N: len(s), P50ms: ms(Quantile(s, 0.5)), P90ms: ms(Quantile(s, 0.9)),
		P99ms: ms(Quantile(s, 0.99)), MaxMs: ms(Quantile(s, 1))}
}
