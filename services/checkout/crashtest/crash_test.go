package crashtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/events/topics"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/events/wire"
)

// killPoints are the saga's transitions (app.Transition) it is killed
// after, in turn, each after its nth occurrence since that start: every
// forward step and every compensation boundary. Each start gets a fresh
// wave of checkouts on top of those still in flight, so every boundary
// has work to fall on.
var killPoints = []string{
	"started@8", "step:place_order@6", "step:reserve_stock@5", "compensating@2", "compensated:place_order@2",
	"step:authorize_payment@4", "step:confirm_order@3", "step:commit_stock@3", "step:capture_payment@3",
	"completed@3", "compensated:reserve_stock@1", "compensated:authorize_payment@1", "timed_out@1", "failed@2",
}

// skus: units received per warehouse. CT-D is scarce; CT-E is never
// received, so a checkout asking for it is always out of stock.
var skus = []struct {
	sku      string
	wh1, wh2 int64
}{{"CT-A", 40, 5000}, {"CT-B", 30, 5000}, {"CT-C", 5000, 0}, {"CT-D", 10, 10}, {"CT-E", 0, 0}}

// TestCrashCheckouts runs many concurrent checkouts with mixed outcomes
// (declines, out of stock, provider timeouts, the ambiguous
// charged-but-timed-out case, payment timers) through the real processes
// while the saga is killed at every step and compensation boundary in
// turn, and the stock and payments services are killed in between. After
// the last restart every checkout must end completed or failed, and the
// services' own books must agree: a completed checkout's order confirmed,
// payment captured once and stock committed; a failed one's order
// cancelled, nothing captured (or all refunded), no authorization left
// open; no reservation open anywhere and every SKU's on-hand stock equal
// to what was received minus what completed checkouts took.
func TestCrashCheckouts(t *testing.T) {
	n := 200
	if v := os.Getenv("KEEL_CRASHTEST_CHECKOUTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("KEEL_CRASHTEST_CHECKOUTS=%q: want a positive number", v)
		}
	}
	began := time.Now()
	ctx := context.Background()
	bin := build(t)
	t.Logf("binaries built in %s", time.Since(began).Round(time.Millisecond))
	h := newHarness(t, bin)
	h.startAll()
	t.Logf("processes ready %s after the start", time.Since(began).Round(time.Millisecond))
	h.seedStock()
	checkouts := h.checkouts(n)
	wave := (n + len(killPoints) - 1) / len(killPoints)
	produced := 0

	crashes, killedByTest := 0, 0
	var missed []string
	for i, point := range killPoints {
		saga := h.procs["checkout"]
		// Not waited ready: it may reach its kill point first.
		saga.start("KEEL_CRASH_AT=" + point)
		next := min(produced+wave, n)
		h.produce(checkouts[produced:next])
		produced = next
		switch i {
		case 2, 8: // stock, while it answers the saga's commands
			h.killWhileBusy("stock", "SELECT count(*) FROM processed_commands")
		case 5, 11: // payments, while it talks to its provider
			h.killWhileBusy("payments", "SELECT count(*) FROM processed_commands")
		}
		if saga.waitExit(func() bool { return h.terminal() == produced }, 10*time.Second) {
			crashes++
		} else {
			missed = append(missed, point)
			saga.kill()
			killedByTest++
		}
	}
	h.produce(checkouts[produced:])
	t.Logf("saga killed %d times at its kill point, %d times by the test (not reached: %v); stock killed %d times, payments %d (%s since start)",
		crashes, killedByTest, missed, h.procs["stock"].kills, h.procs["payments"].kills, time.Since(began).Round(time.Millisecond))

	h.procs["checkout"].start()
	h.procs["checkout"].waitReady()
	deadline := time.Now().Add(6 * time.Minute)
	for h.terminal() < n {
		if time.Now().After(deadline) {
			t.Fatalf("after 6 minutes %d of %d checkouts ended; some that did not:\n%s", h.terminal(), n, h.stuck(ctx))
		}
		h.procs["checkout"].mustRun()
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("every checkout ended %s after the start", time.Since(began).Round(time.Millisecond))

	// The compensations a failed checkout does not wait for (a late void)
	// may still be on their way: the books must agree within minutes.
	var last error
	var out outcome
	for end := time.Now().Add(2 * time.Minute); ; {
		out, last = h.verify(ctx, checkouts)
		if last == nil || time.Now().After(end) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if last != nil {
		t.Fatalf("invariants do not hold: %v", last)
	}
	t.Logf("outcomes of %d checkouts: %s; wall time %s", n, out, time.Since(began).Round(time.Millisecond))
	// Out of stock (CT-E) and payment failures are certain; how many
	// complete depends on the machine's speed against the payment timer,
	// so it is reported, not asserted.
	if out.reasons["out_of_stock"] == 0 || out.reasons["payment_declined"]+out.reasons["payment_timed_out"] == 0 {
		t.Errorf("the mix lacks an outcome (out of stock, payment failure): %s", out)
	}
	if out.completed == 0 {
		t.Logf("no checkout completed (a loaded machine: every payment timer fired first)")
	}
}

// build compiles the binaries into a temporary folder, from the workspace.
func build(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.work above the test's folder")
		}
		dir = parent
	}
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin+string(filepath.Separator),
		"./services/stock/cmd/stock", "./services/orders/cmd/orders", "./services/payments/cmd/payments",
		"./services/checkout/cmd/checkout", "./events/cmd/keel-relay")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// harness is one run's processes, databases and topics.
type harness struct {
	t      *testing.T
	bin    string
	prefix string
	dbs    map[string]string // context → database URL
	procs  map[string]*proc
	pools  map[string]*pgxpool.Pool
	http   *http.Client
	// producer sends the checkout requests (made on first use).
	producer *kgo.Client
	// received is what seedStock booked, per SKU.
	received map[string]int64
}

func newHarness(t *testing.T, bin string) *harness {
	logs := os.Getenv("KEEL_CRASHTEST_LOGS") // keep the processes' logs there
	if logs == "" {
		logs = t.TempDir()
	} else if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, bin: bin, prefix: "crash-" + strings.ToLower(ksuid.New().String()[:12]) + ".",
		dbs: map[string]string{}, procs: map[string]*proc{}, pools: map[string]*pgxpool.Pool{},
		http: &http.Client{Timeout: 30 * time.Second}, received: map[string]int64{}}
	for _, c := range []string{"stock", "orders", "payments", "checkout"} {
		h.dbs[c] = testenv.DatabaseURL(t)
		pool, err := pgxpool.New(context.Background(), h.dbs[c])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		h.pools[c] = pool
	}
	// Every topic the processes would create, created here so that the
	// test deletes them: the saga's inputs with their dead letters, the
	// command topics with theirs, checkout.events.
	var names []string
	for _, c := range []string{"carts", "orders", "stock", "payments"} {
		names = append(names, h.prefix+topics.Events(c), topics.DLQ(h.prefix+topics.Events(c)), h.prefix+topics.Commands(c))
		if c != "carts" {
			names = append(names, topics.DLQ(h.prefix+topics.Commands(c)))
		}
	}
	names = append(names, h.prefix+topics.Events("checkout"))
	testenv.CreateTopics(t, 3, names...)

	common := []string{"KEEL_KAFKA_BROKERS=" + strings.Join(testenv.KafkaBrokers(), ","), "KEEL_TOPIC_PREFIX=" + h.prefix,
		"KEEL_TOPIC_PARTITIONS=3", "KEEL_LOG_LEVEL=warn"}
	service := func(name string, env ...string) {
		addr := freeAddr(t)
		p := &proc{t: t, name: name, bin: filepath.Join(bin, name), ready: "http://" + addr + "/readyz", addr: addr,
			log: filepath.Join(logs, name+".log"),
			env: append(append(slices.Clone(common), "KEEL_DATABASE_URL="+h.dbs[name], "KEEL_HTTP_ADDR="+addr,
				"KEEL_KAFKA_INSTANCE_ID="+h.prefix+name), env...)}
		h.procs[name] = p
		t.Cleanup(p.stop)
	}
	service("stock", "KEEL_STOCK_WAREHOUSES=wh-1,wh-2")
	service("orders")
	// Declines, plain timeouts and ambiguous ones (charged, then timed
	// out), on every provider call; a little latency widens the windows
	// a kill can fall into. The provider's books survive the service's
	// kills, as a real provider's would.
	service("payments", "KEEL_PAYMENTS_SIM_BOOKS="+filepath.Join(t.TempDir(), "provider-books.json"), "KEEL_PAYMENTS_SEED=7", "KEEL_PAYMENTS_DECLINE_RATE=0.12", "KEEL_PAYMENTS_TIMEOUT_RATE=0.05",
		"KEEL_PAYMENTS_AMBIGUOUS_RATE=0.05", "KEEL_PAYMENTS_LATENCY=5ms")
	// A short payment timer, so that kills and a slow machine make it
	// fire for some checkouts; the checkout deadline (the reservations'
	// time to live) stays far beyond the test.
	service("checkout", "KEEL_CHECKOUT_PAYMENT_TIMEOUT=10s", "KEEL_CHECKOUT_TIMEOUT=10m", "KEEL_CHECKOUT_TIMER_INTERVAL=200ms")
	for _, c := range []string{"stock", "orders", "payments"} {
		addr := freeAddr(t)
		p := &proc{t: t, name: "relay-" + c, bin: filepath.Join(bin, "keel-relay"), ready: "http://" + addr + "/healthz", addr: addr,
			log: filepath.Join(logs, "relay-"+c+".log"),
			env: append(slices.Clone(common), "KEEL_CONTEXT="+c, "KEEL_DATABASE_URL="+h.dbs[c],
				"KEEL_TOPIC="+h.prefix+topics.Events(c), "KEEL_METRICS_ADDR="+addr)}
		h.procs[p.name] = p
		t.Cleanup(p.stop)
	}
	return h
}

// startAll starts the services (they migrate their databases), then the
// relays. The saga starts with each kill point.
func (h *harness) startAll() {
	for _, name := range []string{"stock", "orders", "payments"} {
		h.procs[name].start()
	}
	for _, name := range []string{"stock", "orders", "payments"} {
		h.procs[name].waitReady()
	}
	for _, c := range []string{"stock", "orders", "payments"} {
		h.procs["relay-"+c].start()
	}
	for _, c := range []string{"stock", "orders", "payments"} {
		h.procs["relay-"+c].waitReady()
	}
}

func (h *harness) seedStock() {
	for _, s := range skus {
		for wh, q := range map[string]int64{"wh-1": s.wh1, "wh-2": s.wh2} {
			if q == 0 {
				continue
			}
			body := fmt.Sprintf(`{"warehouse_id":%q,"quantity":%d}`, wh, q)
			h.post("stock", "/stock/"+s.sku+"/receive", "seed-"+s.sku+"-"+wh, body)
			h.received[s.sku] += q
		}
	}
}

func (h *harness) post(svc, path, key, body string) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+h.procs[svc].addr+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := h.http.Do(req)
	if err != nil {
		h.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		h.t.Fatalf("POST %s: %s %s", path, resp.Status, b)
	}
}

// checkout is one requested checkout and what it asked for.
type checkout struct {
	id    string
	lines map[string]int64
	total int64
	req   *cartsv1.CheckoutRequested
}

// checkouts makes n checkout requests (deterministic lines and prices).
func (h *harness) checkouts(n int) []checkout {
	rng := rand.New(rand.NewPCG(42, 4242))
	eur := func(n int64) *typesv1.Money { return &typesv1.Money{AmountMinor: n, Currency: "EUR"} }
	out := make([]checkout, 0, n)
	for i := range n {
		co := checkout{id: fmt.Sprintf("co-%04d-%s", i, h.prefix[6:18]), lines: map[string]int64{}}
		for _, s := range []string{"CT-A", "CT-B", "CT-C"} {
			if rng.IntN(2) == 0 || (s == "CT-C" && len(co.lines) == 0) {
				co.lines[s] = int64(1 + rng.IntN(3))
			}
		}
		if rng.IntN(100) < 15 {
			co.lines["CT-D"] = 2
		}
		if rng.IntN(100) < 8 {
			co.lines["CT-E"] = 1
		}
		req := &cartsv1.CheckoutRequested{CartId: "cart-" + co.id, CheckoutId: co.id, CartVersion: 1,
			Customer: &typesv1.Customer{CustomerId: "cus-" + co.id, Email: "crash@example.com"},
			ShippingAddress: &typesv1.Address{Name: "Ada", Line1: "1 Main St", City: "Berlin", PostalCode: "10115",
				CountryCode: "DE"},
			PaymentMethod: &typesv1.PaymentMethod{Kind: typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_CARD, Token: "tok_visa"}}
		for _, s := range sortedKeys(co.lines) {
			price := int64(100 + rng.IntN(900))
			req.Lines = append(req.Lines, &cartsv1.CartLine{Sku: s, Name: s, Quantity: co.lines[s], UnitPrice: eur(price),
				LineTotal: eur(price * co.lines[s])})
			co.total += price * co.lines[s]
		}
		req.Totals = &typesv1.Totals{Subtotal: eur(co.total), Total: eur(co.total)}
		co.req = req
		out = append(out, co)
	}
	return out
}

// produce puts the checkouts' CheckoutRequested events on carts.events, as
// the carts relay would, all at once: they run concurrently.
func (h *harness) produce(cos []checkout) {
	h.t.Helper()
	if len(cos) == 0 {
		return
	}
	reg := codec.All()
	recs := make([]*kgo.Record, 0, len(cos))
	for _, co := range cos {
		typ, payload, err := reg.Encode(co.req)
		if err != nil {
			h.t.Fatal(err)
		}
		ev := envelope.Event{ID: ksuid.New(), Type: typ, StreamID: "cart-" + co.id, Version: 1, Payload: payload,
			CorrelationID: co.id, RecordedAt: time.Now()}
		recs = append(recs, wire.Record(h.prefix+topics.Events("carts"), "keel/carts", ev))
	}
	if h.producer == nil {
		h.producer = testenv.Client(h.t, kgo.RequiredAcks(kgo.AllISRAcks()))
	}
	pctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := h.producer.ProduceSync(pctx, recs...).FirstErr(); err != nil {
		h.t.Fatalf("produce checkout requests: %v", err)
	}
}

// terminal counts the checkouts that ended, from the saga's own table
// (written in each step's transaction).
func (h *harness) terminal() int {
	h.t.Helper()
	var n int
	err := h.pools["checkout"].QueryRow(context.Background(),
		`SELECT count(*) FROM checkout_sagas WHERE status IN ('completed', 'failed')`).Scan(&n)
	if err != nil && !strings.Contains(err.Error(), "does not exist") {
		h.t.Fatal(err)
	}
	return n
}

// stuck describes a few checkouts that have not ended: the saga's view
// and what the other services say of the order and the payment.
func (h *harness) stuck(ctx context.Context) string {
	rows, err := h.pools["checkout"].Query(ctx, `SELECT checkout_id FROM checkout_sagas
		WHERE status NOT IN ('completed', 'failed') ORDER BY checkout_id LIMIT 5`)
	if err != nil {
		return err.Error()
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err.Error()
		}
		ids = append(ids, id)
	}
	var b strings.Builder
	for _, id := range ids {
		for _, q := range [][2]string{{"checkout", "/checkouts/" + id}, {"orders", "/orders/order-" + id}, {"payments", "/payments/payment-" + id}} {
			var v json.RawMessage
			err := h.get(q[0], q[1], &v)
			fmt.Fprintf(&b, "%s %s: %s %v\n", q[0], q[1], v, err)
		}
	}
	return b.String()
}

// killWhileBusy kills svc with SIGKILL once it is working (the count of
// query grew since the call, or 20 s passed), then restarts it.
func (h *harness) killWhileBusy(svc, query string) {
	h.t.Helper()
	count := func() int64 {
		var n int64
		if err := h.pools[svc].QueryRow(context.Background(), query).Scan(&n); err != nil {
			h.t.Fatal(err)
		}
		return n
	}
	from := count()
	for end := time.Now().Add(20 * time.Second); count() < from+5 && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	p := h.procs[svc]
	p.kill()
	p.start()
	p.waitReady()
}

type outcome struct {
	completed, failed int
	reasons           map[string]int
	payments          map[string]int // status of the failed checkouts' payments
}

func (o outcome) String() string {
	return fmt.Sprintf("%d completed, %d failed %v; payments of the failed ones %v", o.completed, o.failed, o.reasons, o.payments)
}

// verify reads every service's API and database and checks the books.
func (h *harness) verify(ctx context.Context, cos []checkout) (outcome, error) {
	out := outcome{reasons: map[string]int{}, payments: map[string]int{}}
	took := map[string]int64{}
	var errs []error
	for _, co := range cos {
		var c struct {
			Status        string `json:"status"`
			FailureReason string `json:"failure_reason"`
		}
		var o struct {
			Status string `json:"status"`
		}
		var p struct {
			Status        string `json:"status"`
			CapturedMinor int64  `json:"captured_minor"`
			RefundedMinor int64  `json:"refunded_minor"`
		}
		if err := h.get("checkout", "/checkouts/"+co.id, &c); err != nil {
			return out, err
		}
		if err := h.get("orders", "/orders/order-"+co.id, &o); err != nil && !errors.Is(err, errNotFound) {
			return out, err
		}
		if err := h.get("payments", "/payments/payment-"+co.id, &p); errors.Is(err, errNotFound) {
			p.Status = "none"
		} else if err != nil {
			return out, err
		}
		switch c.Status {
		case "completed":
			out.completed++
			for s, q := range co.lines {
				took[s] += q
			}
			if o.Status != "confirmed" || p.Status != "captured" || p.CapturedMinor != co.total || p.RefundedMinor != 0 {
				errs = append(errs, fmt.Errorf("completed %s: order %q, payment %q captured %d refunded %d of %d",
					co.id, o.Status, p.Status, p.CapturedMinor, p.RefundedMinor, co.total))
			}
		case "failed":
			out.failed++
			out.reasons[c.FailureReason]++
			out.payments[p.Status]++
			if o.Status != "cancelled" && o.Status != "" {
				errs = append(errs, fmt.Errorf("failed %s (%s): order %q, want cancelled", co.id, c.FailureReason, o.Status))
			}
			// Nothing captured that is not refunded, and no authorization
			// left holding the customer's money.
			if p.Status == "captured" || p.Status == "authorized" || p.CapturedMinor != p.RefundedMinor {
				errs = append(errs, fmt.Errorf("failed %s (%s): payment %q captured %d refunded %d",
					co.id, c.FailureReason, p.Status, p.CapturedMinor, p.RefundedMinor))
			}
		default:
			errs = append(errs, fmt.Errorf("checkout %s: status %q", co.id, c.Status))
		}
	}
	for _, s := range skus {
		if h.received[s.sku] == 0 {
			continue
		}
		var st struct {
			OnHand       int64 `json:"on_hand"`
			Reserved     int64 `json:"reserved"`
			Reservations []struct {
				OrderID string `json:"order_id"`
			} `json:"reservations"`
		}
		if err := h.get("stock", "/stock/"+s.sku, &st); err != nil {
			return out, err
		}
		if st.Reserved != 0 || len(st.Reservations) != 0 {
			errs = append(errs, fmt.Errorf("%s: %d units still reserved by %d reservations (e.g. %+v)", s.sku, st.Reserved,
				len(st.Reservations), st.Reservations[:min(3, len(st.Reservations))]))
		}
		if want := h.received[s.sku] - took[s.sku]; st.OnHand != want {
			errs = append(errs, fmt.Errorf("%s: on hand %d, want %d received - %d taken by completed checkouts",
				s.sku, st.OnHand, h.received[s.sku], took[s.sku]))
		}
	}
	// Charged once: no payment captured or authorized twice.
	for _, typ := range []string{"keel.payments.v1.PaymentCaptured", "keel.payments.v1.PaymentAuthorized"} {
		var twice int
		if err := h.pools["payments"].QueryRow(ctx, `SELECT count(*) FROM (SELECT stream_id FROM events WHERE type = $1
			GROUP BY stream_id HAVING count(*) > 1) t`, typ).Scan(&twice); err != nil {
			return out, err
		}
		if twice != 0 {
			errs = append(errs, fmt.Errorf("%d payments with more than one %s", twice, typ))
		}
	}
	return out, errors.Join(errs...)
}

var errNotFound = errors.New("not found")

func (h *harness) get(svc, path string, v any) error {
	resp, err := h.http.Get("http://" + h.procs[svc].addr + path)
	if err != nil {
		return fmt.Errorf("GET %s %s: %w", svc, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s %s: %w", svc, path, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("GET %s %s: %w", svc, path, errNotFound)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("GET %s %s: %s %s", svc, path, resp.Status, b)
	}
	return json.Unmarshal(b, v)
}

// proc is one service process, started and killed by the test.
type proc struct {
	t              *testing.T
	name, bin, log string
	addr, ready    string
	env, extra     []string
	mu             sync.Mutex
	cmd            *exec.Cmd
	done           chan struct{}
	kills, starts  int
}

// start runs the binary with its environment and extra variables; its
// output is appended to its log file.
func (p *proc) start(extra ...string) {
	p.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(f, "=== start %d %v\n", p.starts+1, extra)
	cmd := exec.Command(p.bin)
	cmd.Env = append(append(os.Environ(), p.env...), extra...)
	cmd.Stdout, cmd.Stderr = f, f
	// The process dies with the test binary, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done, p.extra = cmd, done, extra
	p.starts++
	p.mu.Unlock()
}

// waitReady waits (two minutes at most) until the process answers its
// readiness URL. A process that exits first (the binaries give up when the
// database refuses connections at start, as a busy shared server may) is
// started again, four times at most.
func (p *proc) waitReady() {
	p.t.Helper()
	cl := &http.Client{Timeout: 5 * time.Second}
	restarts := 0
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); {
		select {
		case <-p.done:
			if restarts++; restarts > 4 {
				p.t.Fatalf("%s exited before it was ready, 5 times:\n%s", p.name, p.tail())
			}
			p.t.Logf("%s exited before it was ready; starting it again", p.name)
			p.start(p.extra...)
		default:
		}
		if resp, err := cl.Get(p.ready); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNoContent {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("%s not ready after 2 minutes:\n%s", p.name, p.tail())
}

// waitExit waits for the process to exit (true) or, without an exit,
// until done reports true or idle passes (false).
func (p *proc) waitExit(done func() bool, idle time.Duration) bool {
	end := time.Now().Add(idle)
	for time.Now().Before(end) {
		select {
		case <-p.done:
			return true
		case <-time.After(100 * time.Millisecond):
		}
		if done() {
			return false
		}
	}
	return false
}

// mustRun fails the test if the process exited.
func (p *proc) mustRun() {
	p.t.Helper()
	select {
	case <-p.done:
		p.t.Fatalf("%s exited:\n%s", p.name, p.tail())
	default:
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.kills++
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func (p *proc) stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	if p.t.Failed() {
		p.t.Logf("%s log (end):\n%s", p.name, p.tail())
	}
}

// tail is the end of the process's log.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(bytes.TrimSpace(b))
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func sortedKeys(m map[string]int64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
