// Command loadgen drives simulated shoppers through whole checkouts on a
// running Keel (`make up`): carts, a skewed SKU mix with a hot SKU, a mix
// of payment outcomes chosen by the payments simulator's tokens, and the
// saga's GET /checkouts/{id} until each checkout ends. Shoppers arrive at a
// fixed rate (open model, capped in flight). A progress line goes to
// stderr every second; at the end throughput, latency percentiles
// (request → completed) and outcome counts go to stdout, or JSON with
// -json. See README.md, "Load generator".
//
//	go run ./tools/loadgen -rate 100 -duration 30s -seed
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"time"

	"github.com/segmentio/ksuid"

	"github.com/keel-commerce/keel/tools/loadgen/load"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	code, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
	}
	os.Exit(code)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg load.Config
	var st load.Stocking
	var mix string
	var seed, asJSON bool
	fs.StringVar(&cfg.CartsURL, "carts", envOr("KEEL_CARTS_URL", "http://127.0.0.1:8082"), "carts API")
	fs.StringVar(&cfg.CheckoutURL, "checkout", envOr("KEEL_CHECKOUT_URL", "http://127.0.0.1:8085"), "checkout saga API (GET /checkouts/{id})")
	fs.StringVar(&st.CatalogURL, "catalog", envOr("KEEL_CATALOG_URL", "http://127.0.0.1:8086"), "catalog API (with -seed)")
	fs.StringVar(&st.StockURL, "stock", envOr("KEEL_STOCK_URL", "http://127.0.0.1:8081"), "stock API (with -seed)")
	fs.Float64Var(&cfg.Rate, "rate", 50, "shoppers arriving per second (open model)")
	fs.DurationVar(&cfg.Duration, "duration", 30*time.Second, "how long shoppers keep arriving")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "arrivals in this first part are run but left out of the latencies, and throughput counts from its end")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", 2000, "cap on shoppers in flight; arrivals over it are dropped and counted")
	fs.IntVar(&cfg.SKUs, "skus", 1000, "SKUs SKU-00001.. to pick from (list them with -seed or tools/seed)")
	fs.Float64Var(&cfg.Zipf, "zipf", 1.0, "Zipf exponent of the SKU popularity (0: uniform)")
	fs.Float64Var(&cfg.HotShare, "hot-share", 0.1, "share of all line picks going to the hot SKU")
	fs.IntVar(&cfg.HotSKU, "hot-sku", 1, "the hot SKU's number")
	fs.IntVar(&cfg.MaxLines, "max-lines", 3, "lines per cart, uniform 1..N (distinct SKUs)")
	fs.IntVar(&cfg.MaxQuantity, "max-quantity", 2, "units per line, uniform 1..N")
	fs.StringVar(&mix, "payments", "approve=90,decline=5,timeout=3,ambiguous=2", "payment outcome mix (weights), chosen per checkout by the simulator's token")
	fs.DurationVar(&cfg.Wait, "wait", 60*time.Second, "how long a shopper waits for its checkout to end before counting it stuck")
	fs.DurationVar(&cfg.Poll, "poll", 250*time.Millisecond, "first status poll after the checkout request")
	fs.DurationVar(&cfg.MaxPoll, "max-poll", 2*time.Second, "status polls back off, doubling, up to this")
	fs.Uint64Var(&cfg.Seed, "rand-seed", 1, "seed of the shoppers' choices")
	fs.StringVar(&cfg.RunID, "run-id", "", "names the run's carts lg-<id>-<n> (default a new KSUID)")
	fs.BoolVar(&seed, "seed", false, "first list the SKUs in the catalog and receive stock")
	fs.Int64Var(&st.Receive, "receive", 100000, "with -seed: units received per SKU")
	fs.Int64Var(&st.ReceiveHot, "receive-hot", 1000000, "with -seed: units received of the hot SKU")
	fs.StringVar(&st.Warehouse, "warehouse", "wh-1", "with -seed: warehouse receiving the stock")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return 2, nil
	}
	m, err := load.ParseMix(mix)
	if err != nil {
		return 2, err
	}
	cfg.Mix = m
	if cfg.RunID == "" {
		cfg.RunID = ksuid.New().String()
	}
	cfg.Client = load.NewClient(max(cfg.MaxInFlight, 16))
	if seed {
		st.SKUs, st.HotSKU, st.RunID, st.Workers = cfg.SKUs, cfg.HotSKU, cfg.RunID, 16
		t := time.Now()
		if err := load.Prepare(ctx, cfg.Client, st); err != nil {
			return 1, err
		}
		fmt.Fprintf(stderr, "seeded %d SKUs (stock %d each, hot SKU %d: %d) in %s\n", st.SKUs, st.Receive, st.HotSKU,
			st.ReceiveHot, time.Since(t).Round(time.Millisecond))
	}
	fmt.Fprintf(stderr, "loadgen run %s: %.0f shoppers/s for %s, payments %s, carts %s, checkout %s\n",
		cfg.RunID, cfg.Rate, cfg.Duration, cfg.Mix, cfg.CartsURL, cfg.CheckoutURL)
	tty := isTerminal(stderr)
	rep, err := load.Run(ctx, cfg, func(p load.Progress) {
		if tty {
			fmt.Fprintf(stderr, "\r\033[K%s", p)
		} else {
			fmt.Fprintln(stderr, p)
		}
	})
	if tty {
		fmt.Fprintln(stderr)
	}
	if rep == nil {
		return 2, err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if e := enc.Encode(rep); e != nil {
			return 1, e
		}
	} else {
		printReport(stdout, rep)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return 1, err
	}
	return 0, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func printReport(w io.Writer, r *load.Report) {
	fmt.Fprintf(w, "run %s: offered %.0f/s for %.0fs (warm-up %.0fs), payments %s\n", r.RunID, r.OfferedRate, r.DurationS, r.WarmupS, r.Mix)
	fmt.Fprintf(w, "shoppers: %d due, %d started, %d dropped over the in-flight cap; wall %.1fs\n", r.Arrivals, r.Started, r.Dropped, r.WallS)
	fmt.Fprintf(w, "throughput: %.1f completed/s, %.1f ended/s (measured window)\n", r.CompletedPerS, r.EndedPerS)
	lat := func(name string, l load.Latency) {
		fmt.Fprintf(w, "%-34s n=%-6d p50 %7.1f ms  p90 %7.1f ms  p99 %7.1f ms  max %7.1f ms\n", name, l.N, l.P50ms, l.P90ms, l.P99ms, l.MaxMs)
	}
	lat("request -> completed", r.Latency)
	lat("  as observed by polling", r.Observed)
	for _, m := range load.Milestones {
		lat("  step "+m, r.Steps[m])
	}
	lat("request -> failed", r.FailedLatency)
	fmt.Fprintln(w, "outcomes:")
	keys := make([]string, 0, len(r.Outcomes))
	for k := range r.Outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-32s %d\n", k, r.Outcomes[k])
	}
	fmt.Fprintln(w, "by payment outcome asked for:")
	for _, o := range load.Outcomes {
		ends := r.ByPayment[o]
		if len(ends) == 0 {
			continue
		}
		var parts []string
		for k, n := range ends {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
		sort.Strings(parts)
		fmt.Fprintf(w, "  %-10s %s\n", o, strings.Join(parts, ", "))
	}
}
