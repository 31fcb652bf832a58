package main

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/keel-commerce/keel/tools/loadgen/load"
)

func TestParseProcStat(t *testing.T) {
	// The command name may hold spaces and ')': fields start after the last one.
	line := "4242 (post gres: a) b) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 98765 1000 10 0 0 0\n"
	p, ok := parseProcStat("4242", line)
	if !ok {
		t.Fatal("not parsed")
	}
	if p.pid != 4242 || p.ppid != 17 || p.start != 98765 || p.comm != "post gres: a) b" || math.Abs(p.cpu-3.25) > 1e-9 {
		t.Fatalf("got %+v, want pid 4242, ppid 17, start 98765, cpu 3.25 s (325 ticks)", p)
	}
	if _, ok := parseProcStat("1", "1 (short) S 0 1"); ok {
		t.Fatal("a truncated line parsed")
	}
}

func TestTitleGroup(t *testing.T) {
	for title, want := range map[string]string{
		"postgres: 15/main: keel kb_ab12_carts 127.0.0.1(50862) idle":           "postgres_carts",
		"postgres: 15/main: keel kb_ab12_projections 127.0.0.1(1) idle in tran": "postgres_projections",
		"postgres: 15/main: keel keel_test_x 127.0.0.1(50862) idle":             groupForeignDB,
		"postgres: 15/main: checkpointer":                                       "postgres_other",
		"postgres: 15/main: walwriter":                                          "postgres_other",
	} {
		if got := titleGroup(title, "kb_ab12_"); got != want {
			t.Errorf("titleGroup(%q) = %q, want %q", title, got, want)
		}
	}
}

func TestScrapeSum(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `# HELP keel_relay_published_total Events acknowledged by Kafka and checkpointed.
# TYPE keel_relay_published_total counter
keel_relay_published_total{topic="checkout.events"} 120
keel_relay_published_total{topic="orders.commands"} 3
keel_relay_published_totals 1000
keel_checkout_sagas_in_flight 0
`)
	}))
	defer srv.Close()
	got, err := scrapeSum(t.Context(), srv.URL, "keel_relay_published_total")
	if err != nil || got != 123 {
		t.Fatalf("scrapeSum = %v, %v; want 123 (labelled samples summed, a longer name left out)", got, err)
	}
}

// TestCheckoutMetrics checks the per-checkout arithmetic: the divisor is
// the checkouts requested, the system's CPU leaves out the groups that are
// not its own, and transaction markers are end offsets minus records.
func TestCheckoutMetrics(t *testing.T) {
	res := checkoutResult{
		rep: &load.Report{Arrivals: 10, Outcomes: map[string]int{"completed": 9, "failed:payment_declined": 1}, WallS: 5,
			ByPayment: map[load.Outcome]map[string]int{"approve": {"completed": 9}, "decline": {"failed:payment_declined": 1}},
			Latency:   load.Latency{N: 9, P50ms: 100, P99ms: 200}},
		cpu: map[string]float64{"checkout": 1, "kafka_broker": 2, "postgres_checkout": 0.5,
			groupForeignDB: 7, groupBench: 3, groupUnattributed: 0.1},
		machine: 20, wall: 10 * time.Second,
		before: counters{commits: map[string]int64{"checkout": 100, "orders": 10}, events: 50, published: 50, topicEnds: 60, txnState: 30},
		after:  counters{commits: map[string]int64{"checkout": 300, "orders": 60}, events: 330, published: 330, topicEnds: 440, txnState: 90},
	}
	requested := 10.0
	m := map[string]float64{}
	for _, x := range res.metrics(false) {
		m[x.name] = x.v
	}
	for name, want := range map[string]float64{
		"checkouts":                   requested,
		"cpu_ms_per_checkout":         1000 * 3.5 / requested,
		"machine_cpu_ms_per_checkout": 1000 * 20 / requested,
		"cpu_ms_kafka_broker":         1000 * 2 / requested,
		"cpu_ms_" + groupForeignDB:    1000 * 7 / requested,
		"cpus_busy":                   3.5 / 10,
		"commits_per_checkout":        250 / requested,
		"commits_orders":              50 / requested,
		"events_per_checkout":         280 / requested,
		"kafka_offsets_per_checkout":  380 / requested,
		"kafka_markers_per_checkout":  100 / requested,
		"kafka_txn_log_per_checkout":  60 / requested,
		"p99_ms":                      200,
	} {
		if got, ok := m[name]; !ok || math.Abs(got-want) > 1e-9 {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
}
