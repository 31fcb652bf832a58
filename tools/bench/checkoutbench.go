package main

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keel-commerce/keel/tools/loadgen/load"
)

// The checkout benchmark starts each system it measures itself (see
// system.go): its binaries on fresh databases and an empty private broker
// (broker.go), so that the candidate and the baseline run the same way,
// one after the other, on the same machine in the same session.

const (
	checkoutSKUs   = 1000
	checkoutHotSKU = 1
	checkoutMix    = "approve=90,decline=5,timeout=3,ambiguous=2"
	// checkoutMaxInFlight caps the shoppers in flight: past the system's
	// capacity arrivals are dropped (and counted) rather than queued without
	// bound, so a run's backlog drains in a bounded time.
	checkoutMaxInFlight = 500
	// statsFlush is how long after a run the bench waits before it reads
	// pg_stat_database: a backend that goes idle reports its transaction
	// counts within PostgreSQL's PGSTAT_IDLE_INTERVAL (10 s).
	statsFlush = 11 * time.Second
	// idleCPUs is the system's CPU use (its Keel processes and the broker)
	// below which it counts as idle between runs.
	idleCPUs = 0.15
)

// prepareCheckout lists the SKUs and receives plenty of stock (once per
// system start; checkouts/s should not depend on running out).
func prepareCheckout(ctx context.Context, r *running, runID string) error {
	return load.Prepare(ctx, load.NewClient(16), load.Stocking{CatalogURL: r.urls["catalog"], StockURL: r.urls["stock"],
		SKUs: checkoutSKUs, Receive: 1_000_000, ReceiveHot: 10_000_000, HotSKU: checkoutHotSKU, Warehouse: "wh-1",
		RunID: runID, Workers: 16})
}

// settleStocking waits until the system has worked off the stocking,
// runs VACUUM ANALYZE in each of its databases (else autovacuum of the
// freshly filled tables may run inside the first measured window) and
// waits statsFlush: the stocking's commits were seen reported inside the
// light rate's window otherwise (~100 stock and ~25 catalog commits per
// checkout there, against ~20 and ~4 in the next window).
func settleStocking(ctx context.Context, r *running, b *broker) error {
	if _, err := waitIdle(ctx, r, b); err != nil {
		return err
	}
	for _, db := range slices.Sorted(maps.Keys(r.dbs)) {
		c, err := pgx.Connect(ctx, r.dbURL(db))
		if err != nil {
			return err
		}
		// Tables of other owners (the catalogs) are skipped with a warning.
		_, err = c.Exec(ctx, "VACUUM (ANALYZE)")
		_ = c.Close(context.Background())
		if err != nil {
			return fmt.Errorf("vacuum %s: %w", r.dbs[db], err)
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(statsFlush):
	}
	return nil
}

// checkoutResult is one checkout run of one system at one rate.
type checkoutResult struct {
	rep *load.Report
	// cpu is CPU seconds by process group (meter) and machine the busy
	// CPU seconds of the whole machine, over wall: the arrivals, the
	// drain of the system's backlog and the stats flush.
	cpu     map[string]float64
	machine float64
	wall    time.Duration
	// before and after are the system's counters around the same window.
	before, after counters
	// idle is the CPUs the system's Keel processes and broker used just
	// before the window, idle: part of every window's cost.
	idle float64
}

// benchCheckout runs the load generator at rate against the running
// system and measures what the run cost it, from an idle system to an
// idle system again.
func benchCheckout(ctx context.Context, cfg config, r *running, b *broker, rate float64, runID string) (checkoutResult, error) {
	mix, err := load.ParseMix(checkoutMix)
	if err != nil {
		return checkoutResult{}, err
	}
	res := checkoutResult{}
	if res.idle, err = waitIdle(ctx, r, b); err != nil {
		return res, err
	}
	if res.before, err = readCounters(ctx, r, b); err != nil {
		return res, err
	}
	m, err := newMeter(ctx, r, b)
	if err != nil {
		return res, err
	}
	defer m.close()
	if err := m.start(ctx, 500*time.Millisecond); err != nil {
		return res, err
	}
	res.rep, err = load.Run(ctx, load.Config{CartsURL: r.urls["carts"], CheckoutURL: r.urls["checkout"],
		Rate: rate, Duration: cfg.checkoutDuration + cfg.warm, Warmup: cfg.warm, MaxInFlight: checkoutMaxInFlight,
		SKUs: checkoutSKUs, Zipf: 1, HotShare: 0.1, HotSKU: checkoutHotSKU, MaxLines: 3, MaxQuantity: 2, Mix: mix,
		Wait: 60 * time.Second, Poll: 250 * time.Millisecond, MaxPoll: 2 * time.Second, Seed: 1, RunID: runID,
		Client: load.NewClient(checkoutMaxInFlight)},
		func(p load.Progress) {
			if int(p.Elapsed.Seconds())%5 == 0 {
				fmt.Fprintf(os.Stderr, "  %s %.0f/s: %s\n", r.sys.label, rate, p)
			}
		})
	if err != nil {
		return res, err
	}
	if _, err := waitIdle(ctx, r, b); err != nil {
		return res, err
	}
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(statsFlush):
	}
	if res.cpu, res.machine, res.wall, err = m.finish(ctx); err != nil {
		return res, err
	}
	if res.after, err = readCounters(ctx, r, b); err != nil {
		return res, err
	}
	return res, nil
}

// waitIdle waits, up to 5 minutes, until the saga has no checkout in
// flight (keel_checkout_sagas_in_flight) and then, up to a minute, until the
// system is idle (its processes' CPU low, every event published, the
// topics still): the builders, relays and the broker work
// through a run's events after the saga is done. It returns the CPUs
// they used over the last 2 s.
func waitIdle(ctx context.Context, r *running, b *broker) (float64, error) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		n, err := scrapeSum(ctx, r.urls["checkout"]+"/metrics", "keel_checkout_sagas_in_flight")
		if err != nil {
			return 0, err
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			// An overloaded run's backlog: its cost so far is measured,
			// and the next run starts on a fresh system anyway.
			fmt.Fprintf(os.Stderr, "  %v checkouts still in flight after 5 minutes: measuring anyway\n", n)
			break
		}
		fmt.Fprintf(os.Stderr, "  waiting for %v checkouts in flight to end\n", n)
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	pids := append(slices.Collect(maps.Keys(r.pids())), b.pid())
	cpu := func() float64 {
		sum := 0.0
		for _, pid := range pids {
			if p, ok := readProcStat(strconv.Itoa(pid)); ok {
				sum += p.cpu
			}
		}
		return sum
	}
	deadline = time.Now().Add(time.Minute)
	for {
		k0, err := readCounters(ctx, r, b)
		if err != nil {
			return 0, err
		}
		c0, t0 := cpu(), time.Now()
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(2 * time.Second):
		}
		busy := (cpu() - c0) / time.Since(t0).Seconds()
		k1, err := readCounters(ctx, r, b)
		if err != nil {
			return 0, err
		}
		// Low CPU alone can be a starved system on a loaded machine: the
		// relays must also have published every event of the fresh
		// stores, and nothing more have reached the topics meanwhile.
		caughtUp := k1.published >= k1.events && k1.topicEnds == k0.topicEnds
		if busy < idleCPUs && caughtUp {
			return busy, nil
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "  the %s did not settle in a minute (%.2f CPUs, %d events, %d published, topics %d → %d offsets): measuring anyway\n",
				r.sys.label, busy, k1.events, k1.published, k0.topicEnds, k1.topicEnds)
			return busy, nil
		}
	}
}

// metric is one figure of a checkout run.
type metric struct {
	name, label, unit string
	v                 float64
	// ratio: reported as candidate/baseline too
	ratio bool
}

// requested is the shoppers that got as far as the checkout request:
// every "per checkout" figure divides by it.
func (res checkoutResult) requested() int {
	n := 0
	for _, ends := range res.rep.ByPayment {
		for _, c := range ends {
			n += c
		}
	}
	return n
}

// metrics lists a run's figures in report order; steps adds the
// per-step latencies (the light rate's).
func (res checkoutResult) metrics(steps bool) []metric {
	rep, requested := res.rep, res.requested()
	per := func(v float64) float64 {
		if requested == 0 {
			return math.NaN()
		}
		return v / float64(requested)
	}
	stuck := 0
	for k, n := range rep.Outcomes {
		if strings.HasPrefix(k, "stuck") {
			stuck += n
		}
	}
	out := []metric{
		{"completed_per_s", "completed", "co/s", rep.CompletedPerS, true},
		{"ended_per_s", "  ended (completed or failed)", "co/s", rep.EndedPerS, false},
		{"p50_ms", "  request->completed p50", "ms", orInf(rep.Latency.N, rep.Latency.P50ms), true},
		{"p99_ms", "  request->completed p99", "ms", orInf(rep.Latency.N, rep.Latency.P99ms), true},
		{"dropped_pct", "  arrivals dropped (over 500 in flight)", "%", 100 * float64(rep.Dropped) / float64(max(rep.Arrivals, 1)), false},
		{"run_per_s", "  completed/s over the whole run (to the last end)", "co/s", float64(rep.Outcomes["completed"]) / rep.WallS, false},
		{"stuck", "  checkouts not ended within 60 s", "count", float64(stuck), false},
	}
	if steps {
		for _, m := range load.Milestones {
			out = append(out, metric{m + "_p50_ms", "  step " + m + " p50", "ms", orInf(rep.Steps[m].N, rep.Steps[m].P50ms), false},
				metric{m + "_p99_ms", "  step " + m + " p99", "ms", orInf(rep.Steps[m].N, rep.Steps[m].P99ms), false})
		}
	}
	sys := 0.0
	var groups []string
	for g, v := range res.cpu {
		groups = append(groups, g)
		if !notSystem(g) {
			sys += v
		}
	}
	// the system's groups by name, then those left out of its total
	sort.Slice(groups, func(i, j int) bool {
		if notSystem(groups[i]) != notSystem(groups[j]) {
			return !notSystem(groups[i])
		}
		return groups[i] < groups[j]
	})
	out = append(out,
		metric{"checkouts", "  checkouts requested (the 'per checkout' divisor)", "count", float64(requested), false},
		metric{"window_s", "  measured window (arrivals, drain, stats flush)", "s", res.wall.Seconds(), false},
		metric{"cpus_busy", "  CPUs busy, the system's processes", "CPUs", sys / res.wall.Seconds(), false},
		metric{"idle_cpus", "  CPUs its Keel processes and broker used idle, before", "CPUs", res.idle, false},
		metric{"cpu_ms_per_checkout", "  CPU per checkout, the system's processes", "ms", 1000 * per(sys), true},
		metric{"machine_cpu_ms_per_checkout", "  CPU per checkout, whole machine (/proc/stat)", "ms", 1000 * per(res.machine), true})
	for _, g := range groups {
		label := "    " + g
		if notSystem(g) {
			label += " (not in the total)"
		}
		out = append(out, metric{"cpu_ms_" + g, label, "ms", 1000 * per(res.cpu[g]), !notSystem(g)})
	}
	dbs := slices.Sorted(maps.Keys(res.after.commits))
	total := int64(0)
	for _, db := range dbs {
		total += res.after.commits[db] - res.before.commits[db]
	}
	out = append(out, metric{"commits_per_checkout", "  PostgreSQL commits per checkout, all databases", "commits", per(float64(total)), true})
	for _, db := range dbs {
		out = append(out, metric{"commits_" + db, "    " + db, "commits", per(float64(res.after.commits[db] - res.before.commits[db])), true})
	}
	d := func(f func(c counters) int64) float64 { return per(float64(f(res.after) - f(res.before))) }
	records := d(func(c counters) int64 { return c.topicEnds })
	published := d(func(c counters) int64 { return c.published })
	out = append(out,
		metric{"events_per_checkout", "  events appended per checkout (every store)", "events", d(func(c counters) int64 { return c.events }), true},
		metric{"events_per_s", "  events appended/s over the window", "events/s", float64(res.after.events-res.before.events) / res.wall.Seconds(), false},
		metric{"kafka_published_per_checkout", "  records the relays published per checkout", "records", published, true},
		metric{"kafka_offsets_per_checkout", "  topics' end offsets advanced per checkout", "offsets", records, true},
		metric{"kafka_markers_per_checkout", "  of which transaction markers (offsets - published)", "markers", records - published, true},
		metric{"kafka_txn_log_per_checkout", "  __transaction_state records per checkout", "records", d(func(c counters) int64 { return c.txnState }), true},
		metric{"kafka_offset_commits_per_checkout", "  __consumer_offsets records per checkout", "records", d(func(c counters) int64 { return c.offsetCommits }), true})
	return out
}

// cpuShares formats the CPU seconds by group, largest first.
func cpuShares(cpu map[string]float64, wall time.Duration) string {
	names := make([]string, 0, len(cpu))
	total := 0.0
	for k, v := range cpu {
		if notSystem(k) {
			continue
		}
		names = append(names, k)
		total += v
	}
	sort.Slice(names, func(i, j int) bool { return cpu[names[i]] > cpu[names[j]] })
	var parts []string
	for _, k := range names {
		if cpu[k] < 0.01*total {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.0f%%", k, 100*cpu[k]/total))
	}
	return fmt.Sprintf("%.1f CPU-s in %.1fs (%.2f CPUs busy): %s", total, wall.Seconds(), total/wall.Seconds(), strings.Join(parts, ", "))
}

// busyJiffies is the machine's non-idle CPU time in clock ticks (USER_HZ,
// 100 on Linux), from /proc/stat; 0 where there is none.
func busyJiffies() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal guest guest_nice
	var sum int64
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system irq softirq
		if i < len(f) {
			n, _ := strconv.ParseInt(f[i], 10, 64)
			sum += n
		}
	}
	return sum
}

// orInf is the latency percentile v, or +Inf when no checkout completed to
// measure it: worse than any latency in a median, never passing a target.
func orInf(n int, v float64) float64 {
	if n == 0 {
		return math.Inf(1)
	}
	return v
}
