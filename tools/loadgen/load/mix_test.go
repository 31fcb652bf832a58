package load

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestScheduleIsOpenAndExact(t *testing.T) {
	s := Schedule{Rate: 500, Duration: 2 * time.Second}
	if got := s.Total(); got != 1000 {
		t.Fatalf("total %d, want 1000", got)
	}
	for _, c := range []struct {
		elapsed time.Duration
		want    int
	}{
		{-time.Millisecond, 0},
		{0, 1}, // the first arrival starts at once
		{time.Millisecond, 1},
		{2 * time.Millisecond, 2},
		{999 * time.Millisecond, 500},
		{time.Second, 501},
		{time.Hour, 1000}, // a late wake-up catches up, never beyond the total
	} {
		if got := s.Due(c.elapsed); got != c.want {
			t.Errorf("Due(%s) = %d, want %d", c.elapsed, got, c.want)
		}
	}
	if s.At(0) != 0 || s.At(500) != time.Second || s.At(1) != 2*time.Millisecond {
		t.Fatalf("At: %s %s %s", s.At(0), s.At(1), s.At(500))
	}
	// Arrival i is due exactly from At(i) on.
	odd := Schedule{Rate: 3, Duration: time.Second}
	for i := range odd.Total() {
		if odd.Due(odd.At(i)) < i+1 {
			t.Fatalf("arrival %d not due at %s", i, odd.At(i))
		}
	}
	if got := odd.Total(); got != 3 {
		t.Fatalf("3/s for 1s: %d arrivals", got)
	}
	if (Schedule{Rate: 0, Duration: time.Second}).Total() != 0 || (Schedule{Rate: 0}).Due(time.Second) != 0 {
		t.Fatal("rate 0 schedules arrivals")
	}
}

func TestSKUMixSkew(t *testing.T) {
	m, err := NewSKUMix(1000, 1.0, 0.1, 7)
	if err != nil {
		t.Fatal(err)
	}
	// Pick is a pure function of its draws.
	if m.Pick(0.05, 0.9) != 7 || m.Pick(0.1, 0) != 1 || m.Pick(0.5, 1) != 1000 {
		t.Fatalf("picks %d %d %d", m.Pick(0.05, 0.9), m.Pick(0.1, 0), m.Pick(0.5, 1))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 200_000
	counts := make([]int, 1001)
	for range n {
		counts[m.Pick(rng.Float64(), rng.Float64())]++
	}
	// Rank 1 gets 1/H(1000) ≈ 13.4% of the non-hot picks, rank 2 half of
	// that; the hot SKU its 10% on top of its own Zipf share.
	h := 0.0
	for k := 1; k <= 1000; k++ {
		h += 1 / float64(k)
	}
	near := func(name string, got, want float64) {
		t.Helper()
		if tol := 4 * math.Sqrt(want*(1-want)/n); math.Abs(got-want) > tol {
			t.Errorf("%s: share %.4f, want %.4f ± %.4f", name, got, want, tol)
		}
	}
	near("rank 1", float64(counts[1])/n, 0.9/h)
	near("rank 2", float64(counts[2])/n, 0.9/h/2)
	near("hot SKU 7", float64(counts[7])/n, 0.1+0.9/h/7)
	near("rank 1000", float64(counts[1000])/n, 0.9/h/1000)

	uniform, err := NewSKUMix(4, 0, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range []float64{0.1, 0.3, 0.6, 0.99} {
		if got := uniform.Pick(0.5, v); got != i+1 {
			t.Fatalf("uniform Pick(%v) = %d, want %d", v, got, i+1)
		}
	}
	for _, bad := range []struct {
		n      int
		s, hot float64
		sku    int
	}{{0, 1, 0, 1}, {10, -1, 0, 1}, {10, 1, 1.5, 1}, {10, 1, 0.1, 11}, {10, math.NaN(), 0, 1}} {
		if _, err := NewSKUMix(bad.n, bad.s, bad.hot, bad.sku); err == nil {
			t.Errorf("NewSKUMix(%+v) accepted", bad)
		}
	}
}

func TestPaymentMix(t *testing.T) {
	m, err := ParseMix("approve=90, decline=5,timeout=3,ambiguous=2")
	if err != nil {
		t.Fatal(err)
	}
	if m.String() != "approve=90,decline=5,timeout=3,ambiguous=2" {
		t.Fatalf("String %q", m)
	}
	for _, c := range []struct {
		u    float64
		want Outcome
	}{{0, Approve}, {0.8999, Approve}, {0.9, Decline}, {0.9499, Decline}, {0.9501, Timeout}, {0.9801, Ambiguous}, {0.99999, Ambiguous}} {
		if got := m.Pick(c.u); got != c.want {
			t.Errorf("Pick(%v) = %s, want %s", c.u, got, c.want)
		}
	}
	only, err := ParseMix("decline=1")
	if err != nil || only.Pick(0) != Decline || only.Pick(0.99) != Decline {
		t.Fatalf("decline only: %v %v", only, err)
	}
	for _, bad := range []string{"", "approve=0", "approve", "approve=x", "refund=1", "approve=-1"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
	for _, o := range Outcomes { // the simulator's tokens (services/payments/gateway/sim)
		if o.Token() != map[Outcome]string{Approve: "tok_approve", Decline: "tok_decline", Timeout: "tok_timeout", Ambiguous: "tok_ambiguous"}[o] {
			t.Errorf("token of %s: %s", o, o.Token())
		}
	}
}

func TestQuantileNearestRank(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // Summarize sorts
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	l := Summarize(ds)
	if l.N != 100 || l.P50ms != 50 || l.P90ms != 90 || l.P99ms != 99 || l.MaxMs != 100 {
		t.Fatalf("%+v", l)
	}
	if ds[0] != 100*time.Millisecond {
		t.Fatal("Summarize sorted its argument")
	}
	if Quantile(nil, 0.5) != 0 || Quantile([]time.Duration{3}, 0.99) != 3 || Quantile([]time.Duration{1, 2}, 0) != 1 {
		t.Fatal("edge cases")
	}
	if (Summarize(nil) != Latency{}) {
		t.Fatal("empty summary")
	}
}

func TestMilestonesSplitTheLatency(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	at := func(ms int) *time.Time { x := t0.Add(time.Duration(ms) * time.Millisecond); return &x }
	v := &view{StartedAt: *at(30)}
	for _, s := range []struct {
		step string
		ms   int
	}{{"place_order", 100}, {"reserve_stock", 180}, {"authorize_payment", 200}, {"confirm_order", 260}, {"commit_stock", 250}, {"capture_payment", 270}} {
		v.Steps = append(v.Steps, struct {
			Step        string     `json:"step"`
			CompletedAt *time.Time `json:"completed_at"`
		}{s.step, at(s.ms)})
	}
	got := v.milestones(t0, *at(270))
	want := []time.Duration{30, 70, 80, 20, 70}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	sum := time.Duration(0)
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("%s: %s, want %dms", Milestones[i], got[i], want[i])
		}
		sum += got[i]
	}
	if sum != 270*time.Millisecond {
		t.Fatalf("milestones add up to %s", sum)
	}
	v.Steps = v.Steps[:1] // a step missing: no split
	if v.milestones(t0, *at(270)) != nil {
		t.Fatal("split without every step")
	}
}
