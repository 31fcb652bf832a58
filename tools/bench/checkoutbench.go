package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keel-commerce/keel/tools/loadgen/load"
)

// The system under the checkout benchmark is the one `make up` runs
// (deploy/local/keel.sh): its services' topic and consumer-group names are
// fixed, so a second copy on the same broker would join the same groups,
// and a private broker would add a JVM to the 2 CPUs being measured.
var checkoutServices = []struct{ name, url string }{
	{"stock", "http://127.0.0.1:8081"}, {"carts", "http://127.0.0.1:8082"}, {"orders", "http://127.0.0.1:8083"},
	{"payments", "http://127.0.0.1:8084"}, {"checkout", "http://127.0.0.1:8085"}, {"catalog", "http://127.0.0.1:8086"},
}

// checkoutStores are the event stores a checkout appends to.
var checkoutStores = []string{"keel_carts", "keel_orders", "keel_stock", "keel_payments", "keel_checkout"}

const (
	checkoutSKUs   = 1000
	checkoutHotSKU = 1
	checkoutMix    = "approve=90,decline=5,timeout=3,ambiguous=2"
	// checkoutMaxInFlight caps the shoppers in flight: past the system's
	// capacity arrivals are dropped (and counted) rather than queued without
	// bound, so a run's backlog drains in a bounded time.
	checkoutMaxInFlight = 500
)

// ensureSystem starts what `make up` starts, unless every service answers
// /readyz already. Running services are not rebuilt: after changing one,
// `deploy/local/keel.sh down && make up`.
func ensureSystem(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	ready := func() bool {
		for _, s := range checkoutServices {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/readyz", nil)
			res, err := client.Do(req)
			if err != nil {
				return false
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				return false
			}
		}
		return true
	}
	if ready() {
		return nil
	}
	fmt.Fprintln(os.Stderr, "bench: the services do not all answer; starting them with deploy/local/keel.sh up")
	cmd := exec.CommandContext(ctx, filepath.Join("deploy", "local", "keel.sh"), "up")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("deploy/local/keel.sh up (run make bench from the repo root): %w", err)
	}
	if !ready() {
		return fmt.Errorf("services not ready after deploy/local/keel.sh up")
	}
	return nil
}

// prepareCheckout lists the SKUs and receives plenty of stock (once per
// bench; checkouts/s should not depend on running out).
func prepareCheckout(ctx context.Context, runID string) error {
	if err := ensureSystem(ctx); err != nil {
		return err
	}
	return load.Prepare(ctx, load.NewClient(16), load.Stocking{CatalogURL: checkoutServices[5].url, StockURL: checkoutServices[0].url,
		SKUs: checkoutSKUs, Receive: 1_000_000, ReceiveHot: 10_000_000, HotSKU: checkoutHotSKU, Warehouse: "wh-1",
		RunID: runID, Workers: 16})
}

// checkoutResult is one checkout run.
type checkoutResult struct {
	rep *load.Report
	// events appended to the five stores during the run, per checkout
	// requested (exact only when they all ended in the run), and per second
	eventsPerCheckout, eventsPerSec float64
	// cpu is CPU seconds per process name during the run
	cpu  map[string]float64
	wall time.Duration
}

// benchCheckout runs the load generator at rate for the duration against
// the running system, counting the events every store gained and the CPU
// each process used meanwhile.
func benchCheckout(ctx context.Context, cfg config, rate float64, runID string) (checkoutResult, error) {
	mix, err := load.ParseMix(checkoutMix)
	if err != nil {
		return checkoutResult{}, err
	}
	if err := drain(ctx, 3*time.Minute); err != nil {
		return checkoutResult{}, err
	}
	before, err := storeEvents(ctx)
	if err != nil {
		return checkoutResult{}, err
	}
	cpu0 := cpuByProcess()
	start := time.Now()
	rep, err := load.Run(ctx, load.Config{CartsURL: checkoutServices[1].url, CheckoutURL: checkoutServices[4].url,
		Rate: rate, Duration: cfg.checkoutDuration + cfg.warm, Warmup: cfg.warm, MaxInFlight: checkoutMaxInFlight,
		SKUs: checkoutSKUs, Zipf: 1, HotShare: 0.1, HotSKU: checkoutHotSKU, MaxLines: 3, MaxQuantity: 2, Mix: mix,
		Wait: 60 * time.Second, Poll: 250 * time.Millisecond, MaxPoll: 2 * time.Second, Seed: 1, RunID: runID,
		Client: load.NewClient(checkoutMaxInFlight)},
		func(p load.Progress) {
			if int(p.Elapsed.Seconds())%5 == 0 {
				fmt.Fprintf(os.Stderr, "  checkout %.0f/s: %s\n", rate, p)
			}
		})
	if err != nil {
		return checkoutResult{}, err
	}
	wall := time.Since(start)
	cpu1 := cpuByProcess()
	after, err := storeEvents(ctx)
	if err != nil {
		return checkoutResult{}, err
	}
	res := checkoutResult{rep: rep, cpu: map[string]float64{}, wall: wall}
	requested := 0 // shoppers that got as far as the checkout request
	for _, ends := range rep.ByPayment {
		for _, n := range ends {
			requested += n
		}
	}
	if requested > 0 {
		res.eventsPerCheckout = float64(after-before) / float64(requested)
	}
	res.eventsPerSec = float64(after-before) / wall.Seconds()
	for k, v := range cpu1 {
		if d := v - cpu0[k]; d > 0.05 {
			res.cpu[k] = d
		}
	}
	return res, nil
}

// storeEvents is the number of events in the checkout's five stores.
func storeEvents(ctx context.Context) (int64, error) {
	var total int64
	for _, db := range checkoutStores {
		u, err := url.Parse(pgURL())
		if err != nil {
			return 0, err
		}
		u.Path = "/" + db
		c, err := pgx.Connect(ctx, u.String())
		if err != nil {
			return 0, fmt.Errorf("%s: %w", db, err)
		}
		var n int64
		err = c.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n)
		_ = c.Close(ctx)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", db, err)
		}
		total += n
	}
	return total, nil
}

// cpuByProcess sums user+system CPU seconds of every process on the
// machine by its command name (/proc/<pid>/stat); processes that end
// between two calls drop out, which the short ones (psql, go) may.
func cpuByProcess() map[string]float64 {
	out := map[string]float64{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if lp < 0 || rp < lp {
			continue
		}
		f := strings.Fields(s[rp+1:])
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseFloat(f[11], 64) // utime: field 14
		st, _ := strconv.ParseFloat(f[12], 64) // stime: field 15
		out[s[lp+1:rp]] += (ut + st) / 100     // USER_HZ
	}
	return out
}

// cpuShares formats the CPU seconds by process, largest first.
func cpuShares(cpu map[string]float64, wall time.Duration) string {
	names := make([]string, 0, len(cpu))
	total := 0.0
	for k, v := range cpu {
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

// drain waits until the saga has no checkout in flight
// (keel_checkout_sagas_in_flight), so a run does not measure the previous
// run's backlog.
func drain(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		n, err := sagasInFlight(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			// The saga is done, but the builders, relays and the broker may
			// still work through the last run's (or the stocking's) events:
			// a run measured meanwhile shares the CPUs with that backlog.
			settle(ctx, 0.4, time.Minute)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%v checkouts still in flight after %s", n, limit)
		}
		fmt.Fprintf(os.Stderr, "  waiting for %v checkouts in flight to end\n", n)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// settle waits, at most limit, until the machine's busy CPUs over a second
// fall below busy; on a shared machine they may never, which it says.
func settle(ctx context.Context, busy float64, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for {
		b0, t0 := busyJiffies(), time.Now()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		cpus := float64(busyJiffies()-b0) / 100 / time.Since(t0).Seconds()
		if cpus < busy {
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "  the machine did not settle below %.1f busy CPUs in %s (%.2f busy): measuring anyway\n", busy, limit, cpus)
			return
		}
	}
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

func sagasInFlight(ctx context.Context) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, checkoutServices[4].url+"/metrics", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "keel_checkout_sagas_in_flight "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no keel_checkout_sagas_in_flight in the checkout service's /metrics")
}

// orInf is the latency percentile v, or +Inf when no checkout completed to
// measure it: worse than any latency in a median, never passing a target.
func orInf(n int, v float64) float64 {
	if n == 0 {
		return math.Inf(1)
	}
	return v
}
