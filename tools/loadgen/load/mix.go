package load

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Schedule is an open arrival schedule: arrival i is due at i/Rate after
// the start, for arrivals due before Duration. New arrivals never wait for
// earlier ones to finish.
type Schedule struct {
	Rate     float64 // arrivals per second, > 0
	Duration time.Duration
}

// Total is the number of arrivals due before Duration.
func (s Schedule) Total() int {
	if s.Rate <= 0 || s.Duration <= 0 {
		return 0
	}
	return int(math.Ceil(s.Duration.Seconds()*s.Rate - 1e-9))
}

// Due is how many arrivals are due once elapsed has passed since the start
// (arrival 0 is due at once), at most Total. A scheduler that wakes late
// starts every arrival it missed at once, so the offered rate holds.
func (s Schedule) Due(elapsed time.Duration) int {
	if elapsed < 0 || s.Rate <= 0 {
		return 0
	}
	return min(int(math.Floor(elapsed.Seconds()*s.Rate+1e-9))+1, s.Total())
}

// At is when arrival i is due, after the start (rounded up to the
// nanosecond, so Due(At(i)) counts it).
func (s Schedule) At(i int) time.Duration {
	return time.Duration(math.Ceil(float64(i) / s.Rate * float64(time.Second)))
}

// SKUMix picks SKUs 1..N: with probability Hot the hot SKU, else a
// Zipf-like rank, P(k) ∝ 1/k^s, so a few SKUs sell most.
type SKUMix struct {
	hot    float64
	hotSKU int
	cdf    []float64 // cdf[k-1] = P(rank ≤ k)
}

// NewSKUMix builds the mix over n SKUs with Zipf exponent s (≥ 0; 0 is
// uniform), hot share hot in [0, 1] going to SKU hotSKU (1..n).
func NewSKUMix(n int, s, hot float64, hotSKU int) (*SKUMix, error) {
	switch {
	case n < 1:
		return nil, fmt.Errorf("need at least one SKU, got %d", n)
	case s < 0 || math.IsNaN(s):
		return nil, fmt.Errorf("zipf exponent %v < 0", s)
	case hot < 0 || hot > 1 || math.IsNaN(hot):
		return nil, fmt.Errorf("hot share %v outside [0, 1]", hot)
	case hotSKU < 1 || hotSKU > n:
		return nil, fmt.Errorf("hot SKU %d outside 1..%d", hotSKU, n)
	}
	m := &SKUMix{hot: hot, hotSKU: hotSKU, cdf: make([]float64, n)}
	sum := 0.0
	for k := 1; k <= n; k++ {
		sum += math.Pow(float64(k), -s)
		m.cdf[k-1] = sum
	}
	for i := range m.cdf {
		m.cdf[i] /= sum
	}
	m.cdf[n-1] = 1
	return m, nil
}

// Pick maps two uniform draws in [0, 1) to a SKU number: u decides hot or
// not, v the rank.
func (m *SKUMix) Pick(u, v float64) int {
	if u < m.hot {
		return m.hotSKU
	}
	return sort.SearchFloat64s(m.cdf, v) + 1 // first rank whose cdf ≥ v
}

// Outcome is the payment outcome a shopper asks the payments simulator for,
// through the payment method's token (services/payments/gateway/sim).
type Outcome string

// The outcomes, in the order a mix is written.
const (
	Approve   Outcome = "approve"
	Decline   Outcome = "decline"
	Timeout   Outcome = "timeout"
	Ambiguous Outcome = "ambiguous"
)

// Outcomes lists every outcome.
var Outcomes = []Outcome{Approve, Decline, Timeout, Ambiguous}

// Token is the simulator's token that chooses o (sim.TokenApprove, …;
// written out here so the tools module does not depend on the payments one,
// and held to them by the simulator's tests of the same strings).
func (o Outcome) Token() string { return "tok_" + string(o) }

// Mix is the share of each payment outcome (weights, any scale).
type Mix map[Outcome]float64

// ParseMix reads "approve=90,decline=5,timeout=3,ambiguous=2".
func ParseMix(s string) (Mix, error) {
	m := Mix{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		w, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		o := Outcome(strings.TrimSpace(k))
		if !ok || err != nil || w < 0 || math.IsNaN(w) || math.IsInf(w, 0) {
			return nil, fmt.Errorf("payment mix: %q is not outcome=weight", part)
		}
		known := false
		for _, x := range Outcomes {
			known = known || x == o
		}
		if !known {
			return nil, fmt.Errorf("payment mix: unknown outcome %q (have approve, decline, timeout, ambiguous)", o)
		}
		m[o] += w
	}
	total := 0.0
	for _, w := range m {
		total += w
	}
	if total <= 0 {
		return nil, fmt.Errorf("payment mix %q: weights sum to 0", s)
	}
	return m, nil
}

// String writes the mix back in ParseMix's form.
func (m Mix) String() string {
	var parts []string
	for _, o := range Outcomes {
		if w, ok := m[o]; ok {
			parts = append(parts, fmt.Sprintf("%s=%g", o, w))
		}
	}
	return strings.Join(parts, ",")
}

// Pick maps a uniform draw in [0, 1) to an outcome by weight.
func (m Mix) Pick(u float64) Outcome {
	total := 0.0
	for _, o := range Outcomes {
		total += m[o]
	}
	acc, x := 0.0, u*total
	last := Approve
	for _, o := range Outcomes {
		if m[o] <= 0 {
			continue
		}
		acc += m[o]
		last = o
		if x < acc {
			return o
		}
	}
	return last
}
