// Command bench measures Keel's event store and relay against the local
// stack (`make bench`): plain INSERT baselines, single-event and batched
// pg.Store appends, and relay lag at a paced append rate next to a
// franz-go produce→ack baseline. Every figure is the median of -runs runs,
// each benchmark on a fresh database (keel_bench_<random>, dropped after)
// and a fresh topic. See README.md, "Benchmarks".
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"
)

type config struct {
	runs          int
	duration      time.Duration
	relayDuration time.Duration
	warm          time.Duration
	writers       int
	batchWriters  int
	batch         int
	rate          float64
	only          map[string]bool
	// checkout: offered shoppers/s (the target), a light rate for the
	// pipeline's latency unloaded, and the measured window of each.
	checkoutRate, checkoutLowRate float64
	checkoutDuration              time.Duration
	// checkout: the commits whose binaries are measured side by side
	// (candidate "": the working tree; baseline "": none)
	candidateCommit, baselineCommit string
	// rebuild: events in the orders store; visible: orders/s and window.
	rebuildEvents   int
	rebuildFlush    int
	visibleRate     float64
	visibleDuration time.Duration
}

var allBenches = []string{"baseline", "single", "batch", "kafka", "relay", "reserve", "checkout", "rebuild", "visible"}

func main() {
	var cfg config
	var only, cpuprofile string
	flag.IntVar(&cfg.runs, "runs", 3, "runs per figure; each figure is the median")
	flag.DurationVar(&cfg.duration, "duration", 5*time.Second, "measured time of each throughput benchmark")
	flag.DurationVar(&cfg.relayDuration, "relay-duration", 10*time.Second, "measured time of the paced relay and Kafka benchmarks")
	flag.DurationVar(&cfg.warm, "warmup", time.Second, "unmeasured warm-up before each measured window")
	flag.IntVar(&cfg.writers, "writers", 32, "concurrent writers (one connection each) for single-row/single-event benchmarks")
	flag.IntVar(&cfg.batchWriters, "batch-writers", 16, "concurrent writers for the 100-row/100-event benchmarks")
	flag.IntVar(&cfg.batch, "batch", 100, "rows per batched INSERT / events per batched Append")
	flag.Float64Var(&cfg.rate, "rate", 5000, "offered events/s for the relay and Kafka benchmarks")
	flag.Float64Var(&cfg.checkoutRate, "checkout-rate", 500, "checkout: shoppers/s offered (the target rate)")
	flag.Float64Var(&cfg.checkoutLowRate, "checkout-low-rate", 5, "checkout: a light rate, for the latency of the pipeline not queueing (0: skip)")
	flag.DurationVar(&cfg.checkoutDuration, "checkout-duration", 15*time.Second, "checkout: measured arrival window of each rate")
	flag.StringVar(&cfg.candidateCommit, "candidate-commit", "", "checkout: build the measured binaries from this commit (default: the working tree)")
	flag.StringVar(&cfg.baselineCommit, "baseline-commit", "91475ce", "checkout: build the baseline's binaries from this commit, measured in the same runs (empty: no baseline)")
	flag.IntVar(&cfg.rebuildEvents, "rebuild-events", 100_000, "rebuild: events of order lives in the orders store rebuilt from")
	flag.IntVar(&cfg.rebuildFlush, "rebuild-flush-every", 0, "rebuild: RebuildOptions.FlushEvery (0: its default, 50,000)")
	flag.Float64Var(&cfg.visibleRate, "visible-rate", 100, "visible: orders placed per second")
	flag.DurationVar(&cfg.visibleDuration, "visible-duration", 10*time.Second, "visible: measured window of placed orders")
	flag.StringVar(&only, "only", strings.Join(allBenches, ","), "comma list of benchmarks: "+strings.Join(allBenches, ","))
	flag.StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile of the bench process to this file")
	flag.Parse()
	cfg.only = map[string]bool{}
	for _, b := range strings.Split(only, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		if !strings.Contains(","+strings.Join(allBenches, ",")+",", ","+b+",") {
			fmt.Fprintf(os.Stderr, "bench: unknown benchmark %q (have %s)\n", b, strings.Join(allBenches, ","))
			os.Exit(2)
		}
		cfg.only[b] = true
	}
	if cfg.runs < 1 {
		fmt.Fprintln(os.Stderr, "bench: -runs must be ≥ 1")
		os.Exit(2)
	}
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func run(ctx context.Context, cfg config) error {
	settings, err := serverSettings(ctx)
	if err != nil {
		return err
	}
	var co *checkoutSession
	if cfg.only["checkout"] {
		var err error
		if co, err = setupCheckout(ctx, cfg); err != nil {
			return fmt.Errorf("checkout: %w", err)
		}
		defer co.close()
	}
	host, _ := os.Hostname()
	fmt.Printf("Keel benchmarks  %s  host=%s  go=%s\n", time.Now().Format(time.RFC3339), host, runtime.Version())
	fmt.Printf("machine: %d CPUs (GOMAXPROCS %d), shared by PostgreSQL, Kafka, this bench client and possibly other tests; load average at start: %s\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), loadavg())
	fmt.Printf("postgres: %s (%s)\n", redact(pgURL()), settings)
	fmt.Printf("kafka: %s\n", strings.Join(kafkaBrokers(), ","))
	if co != nil {
		for _, sys := range co.systems {
			fmt.Printf("checkout %s: %s (bench broker %s)\n", sys.label, sys.rev, co.broker.addr)
		}
	}
	fmt.Printf("runs=%d duration=%s relay-duration=%s warmup=%s writers=%d batch-writers=%d batch=%d rate=%.0f/s only=%s\n\n",
		cfg.runs, cfg.duration, cfg.relayDuration, cfg.warm, cfg.writers, cfg.batchWriters, cfg.batch, cfg.rate, keys(cfg.only))

	fs := newFigures()
	b := fmt.Sprint(cfg.batch)
	fs.def("baseline_single_rows_per_s", fmt.Sprintf("baseline INSERT 1 row, %d writers", cfg.writers), "rows/s", "", nil)
	fs.def("baseline_single_p50_ms", "  latency p50", "ms", "", nil)
	fs.def("baseline_single_p99_ms", "  latency p99", "ms", "", nil)
	fs.def("baseline_batch_rows_per_s", fmt.Sprintf("baseline INSERT %s rows, %d writers", b, cfg.batchWriters), "rows/s", "", nil)
	fs.def("append_single_events_per_s", fmt.Sprintf("Append 1 event, %d writers", cfg.writers), "events/s", ">=10000", atLeast(10000))
	fs.def("append_single_p50_ms", "  latency p50", "ms", "", nil)
	fs.def("append_single_p99_ms", "  latency p99", "ms", "<=10", atMost(10))
	fs.def("append_single_ratio", "  ratio to 1-row baseline", "x", "", nil)
	fs.def("append_batch_events_per_s", fmt.Sprintf("Append %s events, %d writers", b, cfg.batchWriters), "events/s", ">=60000", atLeast(60000))
	fs.def("append_batch_p50_ms", "  latency p50 (per call)", "ms", "", nil)
	fs.def("append_batch_p99_ms", "  latency p99 (per call)", "ms", "", nil)
	fs.def("append_batch_ratio", fmt.Sprintf("  ratio to %s-row baseline", b), "x", "", nil)
	fs.def("kafka_achieved_per_s", fmt.Sprintf("Kafka produce, paced %.0f/s: achieved", cfg.rate), "records/s", "", nil)
	fs.def("kafka_ack_p50_ms", "  produce->ack p50", "ms", "", nil)
	fs.def("kafka_ack_p99_ms", "  produce->ack p99", "ms", "", nil)
	fs.def("relay_achieved_per_s", fmt.Sprintf("Relay, paced appends %.0f/s: achieved", cfg.rate), "events/s", "", nil)
	fs.def("relay_append_p99_ms", "  append latency p99 while relaying", "ms", "", nil)
	fs.def("relay_lag_p50_ms", "  lag commit->consumer p50", "ms", "", nil)
	fs.def("relay_lag_p99_ms", "  lag commit->consumer p99", "ms", "<=50", atMost(50))
	fs.def("relay_lag_max_ms", "  lag commit->consumer max", "ms", "", nil)
	fs.def("relay_hist_p50_ms", "  keel_relay_delivery_seconds p50 (commit->ack)", "ms", "", nil)
	fs.def("relay_hist_p99_ms", "  keel_relay_delivery_seconds p99 (commit->ack)", "ms", "", nil)
	fs.def("relay_batches", "  relay batches (whole run)", "count", "", nil)
	fs.def("relay_batch_mean", "  events per batch, mean", "events", "", nil)
	fs.def("relay_gap_p50_ms", "  between batches (read, held check, NOTIFY wait) p50", "ms", "", nil)
	fs.def("relay_gap_p99_ms", "  between batches p99", "ms", "", nil)
	fs.def("relay_publish_p50_ms", "  publish batch (produce, acks, checkpoint) p50", "ms", "", nil)
	fs.def("relay_publish_p99_ms", "  publish batch p99", "ms", "", nil)
	fs.def("relay_checkpoint_p50_ms", "  of which SaveCheckpoint p50", "ms", "", nil)
	fs.def("relay_checkpoint_p99_ms", "  of which SaveCheckpoint p99", "ms", "", nil)
	fs.def("relay_restarts", "  relay restarts (keel_relay_restarts_total)", "count", "", nil)
	fs.def("relay_foreign_xact_max_ms", "  oldest xid-holding tx in another database, max", "ms", "", nil)
	fs.def("relay_foreign_xact_over20ms_pct", "  samples with such a tx older than 20 ms", "%", "", nil)
	fs.def("reserve_hot_per_s", "Stock reservations, 1 hot SKU, 64 clients", "res/s", ">=2000", atLeast(2000))
	fs.def("reserve_hot_p50_ms", "  latency p50", "ms", "", nil)
	fs.def("reserve_hot_p99_ms", "  latency p99", "ms", "", nil)
	fs.def("reserve_spread_per_s", "Stock reservations, 10,000 SKUs, 64 clients", "res/s", ">=5000", atLeast(5000))
	fs.def("reserve_spread_p50_ms", "  latency p50", "ms", "", nil)
	fs.def("reserve_spread_p99_ms", "  latency p99", "ms", "", nil)
	fs.def("rebuild_history_events_per_s", fmt.Sprintf("Rebuild order_history from %d events", cfg.rebuildEvents), "events/s", ">=50000", atLeast(50000))
	fs.def("rebuild_history_pass_s", "  read + fold (reader a batch ahead)", "s", "", nil)
	fs.def("rebuild_history_flush_s", "  flushes (COPY, upserts; every 50,000 and at the end)", "s", "", nil)
	fs.def("rebuild_history_switch_s", "  setup, catch-up and switch", "s", "", nil)
	fs.def("rebuild_history_client_cpu_s", "  CPU of the rebuilding process", "CPU-s", "", nil)
	fs.def("rebuild_history_machine_cpus", "  CPUs busy on the machine meanwhile (all processes)", "CPUs", "", nil)
	fs.def("rebuild_detail_events_per_s", "Rebuild order_detail, same events", "events/s", "", nil)
	fs.def("rebuild_detail_pass_s", "  read + fold", "s", "", nil)
	fs.def("rebuild_detail_flush_s", "  flushes", "s", "", nil)
	fs.def("rebuild_readall_events_per_s", "  floor: ReadAll loop (batches of 5,000)", "events/s", "", nil)
	fs.def("rebuild_copy_rows_per_s", "  floor: COPY the events rows out", "rows/s", "", nil)
	fs.def("rebuild_fold_events_per_s", "  floor: decode + fold order_history in memory", "events/s", "", nil)
	fs.def("rebuild_history_vs_readall", "  order_history rebuild / ReadAll", "x", "", nil)
	fs.def("rebuild_fill_events_per_s", "  filling the store (AppendManyTx, 4 writers)", "events/s", "", nil)
	fs.def("rebuild_orders", "  orders in the store", "count", "", nil)
	vr := fmt.Sprintf("%.0f", cfg.visibleRate)
	fs.def("visible_achieved_per_s", "Command->visible, PlaceOrder at "+vr+"/s: achieved", "orders/s", "", nil)
	fs.def("visible_p50_ms", "  command->visible in order_history p50", "ms", "<=15", atMost(15))
	fs.def("visible_p99_ms", "  command->visible in order_history p99", "ms", "<=100", atMost(100))
	fs.def("visible_detail_p50_ms", "  command->visible in order_detail p50", "ms", "", nil)
	fs.def("visible_detail_p99_ms", "  command->visible in order_detail p99", "ms", "", nil)
	fs.def("visible_timeouts", "  waits given up after 60 s", "count", "", nil)
	for _, m := range milestoneNames[:msVisible] {
		fs.def("visible_at_"+m+"_p50_ms", "  since the command: "+m+" p50", "ms", "", nil)
		fs.def("visible_at_"+m+"_p99_ms", "  since the command: "+m+" p99", "ms", "", nil)
	}
	fs.def("visible_relay_gap_p50_ms", "  relay: between two reads p50", "ms", "", nil)
	fs.def("visible_foreign_xact_max_ms", "  oldest xid-holding tx in another database, max", "ms", "", nil)
	fs.def("visible_foreign_xact_over20ms_pct", "  samples with such a tx older than 20 ms", "%", "", nil)
	fs.def("visible_kafka_ack_p50_ms", "  baseline: Kafka produce->ack p50 (same rate)", "ms", "", nil)
	fs.def("visible_kafka_ack_p99_ms", "  baseline: Kafka produce->ack p99", "ms", "", nil)

	benchID := "bench-" + randomSuffix()
	var checkoutBase1 float64
	for r := 1; r <= cfg.runs; r++ {
		var base1, baseN float64
		step := func(name string, f func() error) error {
			if !cfg.only[name] || ctx.Err() != nil {
				return ctx.Err()
			}
			t := time.Now()
			err := f()
			fmt.Fprintf(os.Stderr, "run %d/%d %-8s %5.1fs  load %s\n", r, cfg.runs, name, time.Since(t).Seconds(), loadavg())
			if err != nil {
				return fmt.Errorf("run %d, %s: %w", r, name, err)
			}
			return nil
		}
		if err := step("baseline", func() error {
			res, err := benchBaseline(ctx, cfg, cfg.writers, 1)
			if err != nil {
				return err
			}
			base1 = res.perSec()
			fs.add("baseline_single_rows_per_s", base1)
			fs.add("baseline_single_p50_ms", ms(quantile(res.lats, 0.5)))
			fs.add("baseline_single_p99_ms", ms(quantile(res.lats, 0.99)))
			res, err = benchBaseline(ctx, cfg, cfg.batchWriters, cfg.batch)
			if err != nil {
				return err
			}
			baseN = res.perSec()
			fs.add("baseline_batch_rows_per_s", baseN)
			return nil
		}); err != nil {
			return err
		}
		if err := step("single", func() error {
			res, err := benchAppend(ctx, cfg, cfg.writers, 1)
			if err != nil {
				return err
			}
			fs.add("append_single_events_per_s", res.perSec())
			fs.add("append_single_p50_ms", ms(quantile(res.lats, 0.5)))
			fs.add("append_single_p99_ms", ms(quantile(res.lats, 0.99)))
			if base1 > 0 {
				fs.add("append_single_ratio", res.perSec()/base1)
			}
			return nil
		}); err != nil {
			return err
		}
		if err := step("batch", func() error {
			res, err := benchAppend(ctx, cfg, cfg.batchWriters, cfg.batch)
			if err != nil {
				return err
			}
			fs.add("append_batch_events_per_s", res.perSec())
			fs.add("append_batch_p50_ms", ms(quantile(res.lats, 0.5)))
			fs.add("append_batch_p99_ms", ms(quantile(res.lats, 0.99)))
			if baseN > 0 {
				fs.add("append_batch_ratio", res.perSec()/baseN)
			}
			return nil
		}); err != nil {
			return err
		}
		if err := step("kafka", func() error {
			achieved, lats, err := benchKafka(ctx, cfg)
			if err != nil {
				return err
			}
			fs.add("kafka_achieved_per_s", achieved)
			fs.add("kafka_ack_p50_ms", ms(quantile(lats, 0.5)))
			fs.add("kafka_ack_p99_ms", ms(quantile(lats, 0.99)))
			return nil
		}); err != nil {
			return err
		}
		if err := step("reserve", func() error {
			for _, c := range []struct {
				key  string
				skus int
			}{{"reserve_hot", 1}, {"reserve_spread", 10_000}} {
				res, err := benchReserve(ctx, cfg, c.skus)
				if err != nil {
					return err
				}
				fs.add(c.key+"_per_s", res.perSec())
				fs.add(c.key+"_p50_ms", ms(quantile(res.lats, 0.5)))
				fs.add(c.key+"_p99_ms", ms(quantile(res.lats, 0.99)))
			}
			return nil
		}); err != nil {
			return err
		}
		if err := step("relay", func() error {
			res, err := benchRelay(ctx, cfg)
			if err != nil {
				return err
			}
			fs.add("relay_achieved_per_s", res.achieved)
			fs.add("relay_append_p99_ms", ms(res.appendP99))
			fs.add("relay_lag_p50_ms", ms(quantile(res.lag, 0.5)))
			fs.add("relay_lag_p99_ms", ms(quantile(res.lag, 0.99)))
			fs.add("relay_lag_max_ms", ms(quantile(res.lag, 1)))
			fs.add("relay_hist_p50_ms", res.histP50*1000)
			fs.add("relay_hist_p99_ms", res.histP99*1000)
			ph := res.phases
			fs.add("relay_batches", float64(ph.batches))
			fs.add("relay_batch_mean", ph.meanBatch)
			fs.add("relay_gap_p50_ms", ms(ph.gapP50))
			fs.add("relay_gap_p99_ms", ms(ph.gapP99))
			fs.add("relay_publish_p50_ms", ms(ph.publishP50))
			fs.add("relay_publish_p99_ms", ms(ph.publishP99))
			fs.add("relay_checkpoint_p50_ms", ms(ph.checkpointP50))
			fs.add("relay_checkpoint_p99_ms", ms(ph.checkpointP99))
			fs.add("relay_restarts", res.restarts)
			fs.add("relay_foreign_xact_max_ms", ms(res.foreignMax))
			fs.add("relay_foreign_xact_over20ms_pct", 100*res.foreignOver)
			return nil
		}); err != nil {
			return err
		}
		if err := step("rebuild", func() error {
			res, err := benchRebuild(ctx, cfg, r)
			if err != nil {
				return err
			}
			fs.add("rebuild_history_events_per_s", res.history.perSec)
			fs.add("rebuild_history_pass_s", res.history.pass.Seconds())
			fs.add("rebuild_history_flush_s", res.history.flush.Seconds())
			fs.add("rebuild_history_switch_s", res.history.switchover.Seconds())
			fs.add("rebuild_history_client_cpu_s", res.history.clientCPU)
			fs.add("rebuild_history_machine_cpus", res.history.machineCPU/(res.history.pass+res.history.flush+res.history.switchover).Seconds())
			fs.add("rebuild_detail_events_per_s", res.detail.perSec)
			fs.add("rebuild_detail_pass_s", res.detail.pass.Seconds())
			fs.add("rebuild_detail_flush_s", res.detail.flush.Seconds())
			fs.add("rebuild_readall_events_per_s", res.readAllPerSec)
			fs.add("rebuild_copy_rows_per_s", res.copyOutPerSec)
			fs.add("rebuild_fold_events_per_s", res.foldPerSec)
			fs.add("rebuild_history_vs_readall", res.history.perSec/res.readAllPerSec)
			fs.add("rebuild_fill_events_per_s", res.fillPerSec)
			fs.add("rebuild_orders", float64(res.orders))
			fmt.Fprintf(os.Stderr, "  %d events, %d orders; order_history %.0f/s, order_detail %.0f/s, ReadAll %.0f/s\n",
				res.events, res.orders, res.history.perSec, res.detail.perSec, res.readAllPerSec)
			return nil
		}); err != nil {
			return err
		}
		if err := step("visible", func() error {
			res, err := benchVisible(ctx, cfg)
			if err != nil {
				return err
			}
			fs.add("visible_achieved_per_s", res.achieved)
			fs.add("visible_p50_ms", ms(quantile(res.ms[msVisible], 0.5)))
			fs.add("visible_p99_ms", ms(quantile(res.ms[msVisible], 0.99)))
			fs.add("visible_detail_p50_ms", ms(quantile(res.ms[msVisibleDetail], 0.5)))
			fs.add("visible_detail_p99_ms", ms(quantile(res.ms[msVisibleDetail], 0.99)))
			fs.add("visible_timeouts", float64(res.timeouts))
			for m, name := range milestoneNames[:msVisible] {
				fs.add("visible_at_"+name+"_p50_ms", ms(quantile(res.ms[m], 0.5)))
				fs.add("visible_at_"+name+"_p99_ms", ms(quantile(res.ms[m], 0.99)))
			}
			fs.add("visible_relay_gap_p50_ms", ms(quantile(res.relayGaps, 0.5)))
			fs.add("visible_foreign_xact_max_ms", ms(res.foreignMax))
			fs.add("visible_foreign_xact_over20ms_pct", 100*res.foreignOver)
			fs.add("visible_kafka_ack_p50_ms", ms(res.ackP50))
			fs.add("visible_kafka_ack_p99_ms", ms(res.ackP99))
			fmt.Fprintf(os.Stderr, "  %d orders measured; visible p50 %.1f ms p99 %.1f ms\n", res.orders,
				ms(quantile(res.ms[msVisible], 0.5)), ms(quantile(res.ms[msVisible], 0.99)))
			return nil
		}); err != nil {
			return err
		}
		if err := step("checkout", func() error {
			if base1 == 0 { // the same run's baseline, unless the baseline step ran
				res, err := benchBaseline(ctx, cfg, cfg.writers, 1)
				if err != nil {
					return err
				}
				base1 = res.perSec()
			}
			checkoutBase1 = base1
			return co.run(ctx, cfg, r, benchID)
		}); err != nil {
			return err
		}
	}
	if co != nil {
		co.emit(fs, cfg, checkoutBase1)
	}

	table, lines := fs.report()
	fmt.Print(table)
	fmt.Println()
	fmt.Println("How measured:")
	fmt.Printf("- baselines: plain INSERT (autocommit = INSERT+COMMIT, one round trip) into bench_baseline(id bigserial primary key, payload bytea), payload ~%d bytes; the %s-row form is INSERT ... SELECT unnest($1::bytea[]); one dedicated connection per writer\n", len(payloads[0]), b)
	fmt.Printf("- appends: pg.Store.Append on a pool with MaxConns = writers+4 (all opened before the clock starts); each writer round-robins over its own %d streams with ExpectedVersion exact (tracked locally, so no conflicts); event = %s protobuf (~%d bytes) with correlation/causation ids and metadata traceparent\n", streamsPerWriter, eventType, len(payloads[0]))
	fmt.Printf("- throughput counts calls that start after the %s warm-up and end inside the measured window; latency is per call (client side)\n", cfg.warm)
	fmt.Printf("- kafka: franz-go producer, acks=all, idempotent, linger 0, lz4 (the relay's settings), records shaped like the relay's (CloudEvents headers), paced by a 1 ms ticker; latency = Produce call to ack callback\n")
	fmt.Printf("- relay: in-process relay.Relay on a fresh store and a fresh %d-partition topic; 48 appenders take tokens from a 1 ms ticker pacer (single-event appends, exact versions); lag = arrival at a separate kgo consumer minus the event's recorded_at (what a downstream consumer sees; recorded_at is now() of the append transaction, so it includes the commit); events recorded in the warm-up are excluded. keel_relay_delivery_seconds (private registry, bucket-interpolated, warm-up subtracted) is shown for comparison: it stops at the broker's ack\n", relayPartitions)
	fmt.Printf("- the relay's tail only passes transactions older than every running one on the whole server (xids are cluster-wide), so other tests' transactions in other databases hold it back: the \"oldest xid-holding tx in another database\" lines sample that every 50 ms\n")
	if cfg.only["checkout"] {
		fmt.Printf("- checkout: the bench builds the candidate (%s) and the baseline (-baseline-commit %q; git archive into a temporary folder) with go build, and starts each system itself as deploy/local/keel.sh would (a keel-relay per context but checkout, whose service publishes its store; every services/*/cmd/* and projections/cmd/* binary; keel.sh's environment) on free ports, fresh databases kb_<random>_<name> on the server of KEEL_PG_URL (dropped after) and a private single-node broker with the stack's settings, emptied of topics and groups before each start (the topic and group names are fixed). Each run starts every system in turn (baseline first in odd runs, last in even ones), stocks %d SKUs, waits until it is idle, runs VACUUM ANALYZE in its databases and waits %s more, then runs the light rate and the target rate and stops it. Shoppers: tools/loadgen, Zipf 1 with 10%% of lines on a hot SKU, 1-3 lines, payments %s, open arrivals for %s after a %s warm-up, at most 500 in flight (more are dropped and counted); throughput = checkouts ending inside the arrival window, per second; latency = the checkout request to the saga's ended_at; steps split it (accepted = request to the saga's start). Costs are measured over a window from an idle system (saga in flight 0; over 2 s its processes under %.2f CPUs, every stored event published, the topics still) through the arrivals, back to idle, plus %s for PostgreSQL to report idle backends' counts, and divided by the checkouts requested: CPU from /proc/<pid>/stat sampled every 500 ms by process: each Keel binary, the broker's JVM, PostgreSQL's backends by database (pg_stat_activity, else the process title) and its postmaster and background processes (postgres_other; shared with other work on the server), next to the busy CPU of the whole machine (/proc/stat); commits = pg_stat_database.xact_commit deltas; events = rows the stores gained; Kafka: records the relays published (keel_relay_published_total), end offsets the topics advanced (records + one transaction marker per partition a transaction wrote), __transaction_state and __consumer_offsets records. Ratios are candidate/baseline within each run, median over runs. CPU by process:\n",
			co.systems[0].rev, cfg.baselineCommit, checkoutSKUs, statsFlush, checkoutMix, cfg.checkoutDuration, cfg.warm, idleCPUs, statsFlush)
		for _, n := range co.notes {
			fmt.Printf("    %s\n", n)
		}
	}
	if cfg.only["rebuild"] {
		fmt.Printf("- rebuild: a fresh orders store filled with ~%d events of order lives (OrderPlaced with 1-4 lines, then confirmed+paid (+shipped 2 in 3), cancelled 1 in 5, pending 1 in 10), 4 writers each keeping %d orders in flight and appending the next event of random ones, %d events per AppendManyTx transaction, then VACUUM ANALYZE; readmodel.Rebuild (ReadBatch 5,000, FlushEvery -rebuild-flush-every or its default 50,000) of order_history, then of order_detail, into a fresh projections database, timed from the call to its return (events/s = store events / that time). Floors on the same store and run: ReadAll in batches of 5,000 to the end, COPY (binary) of the events rows to nowhere, and payload decode + order_history's fold into memory (readmodel.Memory)\n", cfg.rebuildEvents, fillWindow, fillBatchLimit)
	}
	if cfg.only["visible"] {
		fmt.Printf("- visible: PlaceOrder through events/command (one OrderPlaced, 1-4 lines) on a fresh orders store at %.0f/s for %s after a %s warm-up; in-process relay.Relay to a fresh %d-partition topic; readmodel.RunBuilders (order_history, order_detail; fresh groups) on a fresh projections database; readmodel.Waiter.Wait for consistency.New(\"orders\", result.Streams) on each projection. Latency = Execute call to Wait returning. Milestones since the call: committed (Execute returned), relay_read (the relay's store subscription read it), kafka (a plain read-committed kgo consumer with kgo's default fetch settings received it), applied (order_history's Apply ran, inside the builder's transaction). Baseline: franz-go produce->ack at the same rate for 3 s, same run\n", cfg.visibleRate, cfg.visibleDuration, cfg.warm, relayPartitions)
	}
	fmt.Printf("- load average at end: %s (on %d CPUs; a load above the CPU count means the figures are depressed by other work on the machine)\n\n", loadavg(), runtime.NumCPU())
	for _, l := range lines {
		fmt.Println(l)
	}
	return nil
}

func keys(m map[string]bool) string {
	var out []string
	for _, b := range allBenches {
		if m[b] {
			out = append(out, b)
		}
	}
	return strings.Join(out, ",")
}
