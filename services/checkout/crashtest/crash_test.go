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
	"regexp"
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
	"github.com/keel-commerce/keel/services/checkout/domain"
)

// killPoints are the saga's transitions (app.Transition) it is killed
// after, in turn, each after its nth occurrence since that start: every
// forward step, every compensation boundary and the reconciliation of an
// unanswered authorization. Each start gets a fresh wave of checkouts on
// top of those still in flight, so every boundary has work to fall on.
// Three waves stage what random outcomes would only rarely produce (see
// TestCrashCheckouts): cancelPoint, latePoint and reconcilePoint.
var killPoints = []string{
	"started@8", "step:place_order@6", "step:reserve_stock@5", "compensating@2", "compensated:place_order@2",
	"step:authorize_payment@4", "step:confirm_order@3", "step:commit_stock@3", "step:capture_payment@3",
	"step:mark_order_paid@3", "completed@3", "compensated:reserve_stock@1", cancelPoint, latePoint, reconcilePoint, "failed@2",
}

const (
	// cancelPoint's wave cancels orders of confirming checkouts while the
	// payments service is down: their authorization is undone by a refund.
	cancelPoint = "compensated:authorize_payment@1"
	// latePoint's wave starts with the payments service killed and kept
	// down past the payment timer: the saga gives up on the payments in
	// flight, among them lateCharges checkouts paying with tokAmbiguous.
	latePoint = "timed_out@1"
	// reconcilePoint's wave brings the payments service back once those
	// checkouts turned back: each is charged late, unanswered, reconciled.
	reconcilePoint = "payment_reconciling@1"
	// lateCharges is how many checkouts of latePoint's wave pay with
	// tokAmbiguous; cancels is how many orders cancelPoint's wave cancels
	// at most.
	lateCharges, cancels = 5, 3
	// tokAmbiguous is the payments simulator's token that charges on the
	// first attempt and answers a timeout; a retry under the same
	// idempotency key answers the recorded approval (sim.TokenAmbiguous).
	tokAmbiguous = "tok_ambiguous"
	// paymentTimeout is the saga's payment timer in this test.
	paymentTimeout = 10 * time.Second
)

// skus: units received per warehouse. CT-D is scarce; CT-E is never
// received, so a checkout asking for it is always out of stock.
var skus = []struct {
	sku      string
	wh1, wh2 int64
}{{"CT-A", 40, 5000}, {"CT-B", 30, 5000}, {"CT-C", 5000, 0}, {"CT-D", 10, 10}, {"CT-E", 0, 0}}

// TestCrashCheckouts runs many concurrent checkouts with mixed outcomes
// (declines, out of stock, provider timeouts, the ambiguous
// charged-but-timed-out case, payment timers) through the real processes
// while the saga is killed at every step, compensation and reconciliation
// boundary in turn, and the stock, orders and payments services and the
// stock, orders and payments relays are killed in between (SIGKILL while
// they work, then restarted). Three waves stage what chance would rarely
// produce:
//
//   - cancelPoint: once the payments service has authorized payments whose
//     capture has not run, it is killed; the orders of up to cancels of
//     those checkouts, confirming by then, are cancelled through the orders
//     API (the orders side rejecting a confirming checkout); then payments
//     comes back: the queued capture lands, the saga refunds it, and the
//     refund confirms the compensation of the authorization.
//   - latePoint: the payments service is killed before the wave, which has
//     lateCharges checkouts paying with tokAmbiguous, and stays down;
//   - reconcilePoint: once every one of those checkouts has turned back on
//     its payment timer, payments comes back and works off its queue: each
//     tokAmbiguous authorization charges and answers a timeout after the
//     checkout failed; the saga must reconcile it (ask again under the same
//     payment, find the charge) and void it.
//
// After the last restart every checkout must end completed or failed, and
// the books must agree, the services' and the payment provider's (the
// simulator's durable books): a completed checkout's order paid,
// stock committed, its one authorization captured once for the total at
// the provider; a failed one's order cancelled, nothing held at the
// provider (its authorization voided, never made, or refunded in full), its
// payment not left unknown unless the saga gave up reconciling it; a
// cancelled one failed with order_rejected, its capture refunded in full,
// its cart closed (other failed carts reopened, completed ones closed, as
// the carts.commands topic shows); the late charges voided at the provider;
// no charge at the provider that belongs to no checkout; no reservation
// open anywhere and every SKU's on-hand stock equal to what was received
// minus what completed checkouts took and what cancelled ones had
// committed before the cancel.
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
	// Wave i ends at ends[i]: n spread evenly over the kill points, or,
	// with KEEL_CRASHTEST_FIRST_WAVE, that many at once in the first wave
	// (all in flight together when the saga first dies) and the rest
	// spread over the others.
	first, wave := (n+len(killPoints)-1)/len(killPoints), 0
	if v := os.Getenv("KEEL_CRASHTEST_FIRST_WAVE"); v != "" {
		var err error
		if first, err = strconv.Atoi(v); err != nil || first < 1 || first > n {
			t.Fatalf("KEEL_CRASHTEST_FIRST_WAVE=%q: want 1..%d", v, n)
		}
	}
	wave = max(1, (n-first+len(killPoints)-2)/(len(killPoints)-1))
	ends := make([]int, len(killPoints))
	for i := range ends {
		ends[i] = min(first+i*wave, n)
	}
	late := slices.Index(killPoints, latePoint)
	checkouts := h.checkouts(n, ends[late-1], ends[late]-ends[late-1])
	produced := 0

	crashes, killedByTest := 0, 0
	var missed []string
	var paymentsDown time.Time
	for i, point := range killPoints {
		saga := h.procs["checkout"]
		idle := 10 * time.Second
		// Done early when every checkout so far has ended: nothing more
		// to reach the kill point with.
		ended := func() bool { return h.terminal() == produced }
		switch point {
		case latePoint:
			// Down before the wave's authorizations are asked for, and
			// until reconcilePoint's wave: past the payment timer.
			h.procs["payments"].kill()
			paymentsDown = time.Now()
			idle = 4 * paymentTimeout
		case reconcilePoint:
			// Started without its kill point: it fires the payment timers
			// of the checkouts still waiting, before payments is back.
			saga.start()
		}
		if point != reconcilePoint {
			// Not waited ready: it may reach its kill point first.
			saga.start("KEEL_CRASH_AT=" + point)
		}
		next := ends[i]
		h.produce(checkouts[produced:next])
		produced = next
		switch i {
		case 1, 6: // orders, while it answers the saga's commands
			h.killWhileBusy("orders", "orders", "SELECT count(*) FROM processed_commands")
		case 2, 8: // stock, likewise
			h.killWhileBusy("stock", "stock", "SELECT count(*) FROM processed_commands")
		case 3, 9: // the stock relay, while its service records events
			h.killWhileBusy("relay-stock", "stock", "SELECT count(*) FROM events")
		case 4, 10:
			h.killWhileBusy("relay-payments", "payments", "SELECT count(*) FROM events")
		case 5: // payments, while it talks to its provider
			h.killWhileBusy("payments", "payments", "SELECT count(*) FROM processed_commands")
		case 7:
			h.killWhileBusy("relay-orders", "orders", "SELECT count(*) FROM events")
		}
		switch point {
		case cancelPoint:
			if h.cancelWhileConfirming(cancels) > 0 {
				// Reached once payments has worked off its queue up to
				// the refunds: a while on a loaded machine.
				idle = 4 * paymentTimeout
			}
		case reconcilePoint:
			h.awaitTurnedBack(h.lateIDs, 6*paymentTimeout)
			// Killed mid-wave, started again with its kill point; then
			// payments comes back and answers the late charges.
			saga.kill()
			h.extraSagaKills++
			saga.start("KEEL_CRASH_AT=" + point)
			h.procs["payments"].start()
			h.procs["payments"].waitReady()
			t.Logf("payments down for %s (payment timer %s)", time.Since(paymentsDown).Round(time.Millisecond), paymentTimeout)
			if len(h.lateIDs) > 0 {
				// Their reconciliations come after they ended.
				ended = func() bool { return false }
				idle = 4 * paymentTimeout
			}
		}
		if saga.waitExit(ended, idle) {
			crashes++
		} else {
			missed = append(missed, point)
			saga.kill()
			killedByTest++
		}
	}
	h.produce(checkouts[produced:])
	t.Logf("saga killed %d times at its kill point, %d times by the test (not reached: %v) and %d times mid-wave; %s (%s since start)",
		crashes, killedByTest, missed, h.extraSagaKills, h.killCounts(), time.Since(began).Round(time.Millisecond))

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

	// The compensations a failed checkout does not wait for (a late void,
	// a reconciliation on its back-off) may still be on their way: the
	// books must agree within minutes.
	out := h.verifyWithin(ctx, checkouts, 2*time.Minute)
	t.Logf("outcomes of %d checkouts: %s; wall time %s", n, out, time.Since(began).Round(time.Millisecond))
	// Out of stock (CT-E) and payment failures are certain; how many
	// complete depends on the machine's speed against the payment timer,
	// so it is reported, not asserted. So are how many late charges came
	// after their checkout's payment timer (all, unless one waited more
	// than a minute for its stock while payments was down; each is
	// checked failed and voided either way) and how many orders could be
	// cancelled while their checkout confirmed (a race with the capture).
	if out.reasons["out_of_stock"] == 0 || out.reasons["payment_declined"]+out.reasons["payment_timed_out"] == 0 {
		t.Errorf("the mix lacks an outcome (out of stock, payment failure): %s", out)
	}
	if out.completed == 0 {
		t.Logf("no checkout completed (a loaded machine: every payment timer fired first)")
	}
}

// build compiles the binaries into a temporary folder, from the workspace.
func build(t *testing.T) string {
	return testenv.Build(t, "./services/stock/cmd/stock", "./services/orders/cmd/orders", "./services/payments/cmd/payments",
		"./services/checkout/cmd/checkout", "./events/cmd/keel-relay")
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
	// books is the payment provider's books (the simulator's file).
	books string
	// late are the checkouts paying with tokAmbiguous in latePoint's wave;
	// cancelled those whose order the test cancelled while confirming.
	late, cancelled map[string]bool
	lateIDs         []string
	// extraSagaKills counts the saga's kills between kill points.
	extraSagaKills int
	// carts is what carts.commands holds per checkout (command type →
	// seen), read by cartsClient.
	carts       map[string]map[string]bool
	cartsClient *kgo.Client
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
		http: &http.Client{Timeout: 30 * time.Second}, received: map[string]int64{}, books: filepath.Join(t.TempDir(), "provider-books.json"),
		late: map[string]bool{}, cancelled: map[string]bool{}, carts: map[string]map[string]bool{}}
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
	// kills, as a real provider's would, and verify reads them.
	service("payments", "KEEL_PAYMENTS_SIM_BOOKS="+h.books, "KEEL_PAYMENTS_SEED=7", "KEEL_PAYMENTS_DECLINE_RATE=0.12", "KEEL_PAYMENTS_TIMEOUT_RATE=0.05",
		"KEEL_PAYMENTS_AMBIGUOUS_RATE=0.05", "KEEL_PAYMENTS_LATENCY=5ms")
	// A short payment timer, so that kills and a slow machine make it
	// fire for some checkouts; the checkout deadline (the reservations'
	// time to live) stays far beyond the test. A short reconciliation
	// back-off: an authorization left unanswered again is asked again
	// within the test (1, 2, 4, 8, 16 s; given up after the sixth).
	service("checkout", "KEEL_CHECKOUT_PAYMENT_TIMEOUT="+paymentTimeout.String(), "KEEL_CHECKOUT_TIMEOUT=10m",
		"KEEL_CHECKOUT_TIMER_INTERVAL=200ms", "KEEL_CHECKOUT_RESOLVE_BACKOFF=1s", "KEEL_CHECKOUT_RESOLVE_ATTEMPTS=6")
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
	if err := h.tryPost(svc, path, key, body); err != nil {
		h.t.Fatal(err)
	}
}

// tryPost posts body with an idempotency key; an answer other than 2xx is
// an error.
func (h *harness) tryPost(svc, path, key, body string) error {
	req, err := http.NewRequest(http.MethodPost, "http://"+h.procs[svc].addr+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := h.http.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("POST %s: %s %s", path, resp.Status, b)
	}
	return nil
}

// checkout is one requested checkout and what it asked for.
type checkout struct {
	id    string
	lines map[string]int64
	total int64
	req   *cartsv1.CheckoutRequested
}

// checkouts makes n checkout requests (deterministic lines and prices).
// The first lateCharges of checkouts[lateFrom:lateFrom+wave] that can be
// reserved (no CT-D, no CT-E) pay with tokAmbiguous.
func (h *harness) checkouts(n, lateFrom, wave int) []checkout {
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
		_, scarce := co.lines["CT-D"]
		_, none := co.lines["CT-E"]
		if i >= lateFrom && i < lateFrom+wave && len(h.lateIDs) < lateCharges && !scarce && !none {
			req.PaymentMethod.Token = tokAmbiguous
			h.late[co.id] = true
			h.lateIDs = append(h.lateIDs, co.id)
		}
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

// killWhileBusy kills the process name with SIGKILL once it is working
// (the count of query in database db grew by 5 since the call, or 20 s
// passed), then restarts it.
func (h *harness) killWhileBusy(name, db, query string) {
	h.t.Helper()
	count := func() int64 {
		var n int64
		if err := h.pools[db].QueryRow(context.Background(), query).Scan(&n); err != nil {
			h.t.Fatal(err)
		}
		return n
	}
	from := count()
	for end := time.Now().Add(20 * time.Second); count() < from+5 && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	p := h.procs[name]
	p.kill()
	p.start()
	p.waitReady()
}

// killCounts lists how often the test killed each process but the saga.
func (h *harness) killCounts() string {
	var parts []string
	for _, name := range []string{"stock", "orders", "payments", "relay-stock", "relay-orders", "relay-payments"} {
		parts = append(parts, fmt.Sprintf("%s %d", name, h.procs[name].kills))
	}
	return "killed " + strings.Join(parts, ", ")
}

// statuses returns the saga's status of each of ids that started.
func (h *harness) statuses(ids []string) map[string]string {
	h.t.Helper()
	rows, err := h.pools["checkout"].Query(context.Background(),
		`SELECT checkout_id, status FROM checkout_sagas WHERE checkout_id = ANY($1)`, ids)
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var id, st string
		if err := rows.Scan(&id, &st); err != nil {
			h.t.Fatal(err)
		}
		out[id] = st
	}
	if err := rows.Err(); err != nil {
		h.t.Fatal(err)
	}
	return out
}

// awaitTurnedBack waits (at most wait) until the saga has turned back
// every checkout of ids (compensating or failed), and logs what it saw.
func (h *harness) awaitTurnedBack(ids []string, wait time.Duration) {
	h.t.Helper()
	if len(ids) == 0 {
		return
	}
	began := time.Now()
	for {
		st := h.statuses(ids)
		var not []string
		for _, id := range ids {
			if st[id] != "compensating" && st[id] != "failed" {
				not = append(not, id+" "+st[id])
			}
		}
		if len(not) == 0 {
			h.t.Logf("%d checkouts turned back after %s", len(ids), time.Since(began).Round(time.Millisecond))
			return
		}
		if time.Since(began) > wait {
			h.t.Logf("after %s, %d of %d checkouts not turned back: %v", wait, len(not), len(ids), not)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cancelWhileConfirming kills the payments service as soon as it has
// authorized payments it has not captured yet (their checkouts about to
// confirm), cancels the orders of up to max of those checkouts once the
// saga shows them confirming (as the orders side would, e.g. for fraud),
// waits until the saga turned them back, then starts payments again: each
// capture queued before the cancel lands first, and the saga must refund
// it. How many it could cancel depends on timing: logged and returned.
func (h *harness) cancelWhileConfirming(max int) int {
	h.t.Helper()
	ctx := context.Background()
	// Checkouts whose payment's last event is its authorization.
	authorized := func() []string {
		rows, err := h.pools["payments"].Query(ctx, `SELECT e.stream_id FROM events e
			WHERE e.type = 'keel.payments.v1.PaymentAuthorized'
			AND NOT EXISTS (SELECT 1 FROM events x WHERE x.stream_id = e.stream_id AND x.version > e.version)`)
		if err != nil {
			h.t.Fatal(err)
		}
		var ids []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				h.t.Fatal(err)
			}
			// The payments store's stream of payment p is "payment-"+p.
			if id, ok := domain.CheckoutIDOfPayment(strings.TrimPrefix(s, "payment-")); ok {
				ids = append(ids, id)
			}
		}
		if err := rows.Err(); err != nil {
			h.t.Fatal(err)
		}
		return ids
	}
	var first time.Time
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		n := len(authorized())
		if n > 0 && first.IsZero() {
			first = time.Now()
		}
		// The first capture is a round trip through two relays and the
		// saga away: a few milliseconds more may catch more.
		if n >= max || (n > 0 && time.Since(first) > 50*time.Millisecond) {
			break
		}
	}
	payments := h.procs["payments"]
	payments.kill()
	time.Sleep(200 * time.Millisecond) // a commit sent before the kill lands
	ids := authorized()
	// The saga sees each authorization (the payments relay still runs):
	// it confirms, or it had turned back (a late success, voided).
	var confirming []string
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st := h.statuses(ids)
		confirming = confirming[:0]
		waiting := 0
		for _, id := range ids {
			switch st[id] {
			case "confirming":
				confirming = append(confirming, id)
			case "stock_reserved":
				waiting++
			}
		}
		if waiting == 0 || time.Now().After(end) {
			break
		}
	}
	sort.Strings(confirming)
	var done []string
	for _, id := range confirming[:min(max, len(confirming))] {
		err := h.tryPost("orders", "/orders/"+domain.OrderID(id)+"/cancel", "crash-cancel-"+id,
			`{"reason":"fraud","detail":"crash test: cancelled while its checkout confirms"}`)
		if err != nil {
			h.t.Logf("cancel the order of confirming checkout %s: %v", id, err)
			continue
		}
		h.cancelled[id] = true
		done = append(done, id)
	}
	h.t.Logf("payments killed with %d payments authorized and not captured; %d of their checkouts confirming; cancelled the orders of %v",
		len(ids), len(confirming), done)
	h.awaitTurnedBack(done, 30*time.Second)
	payments.start()
	payments.waitReady()
	return len(done)
}

type outcome struct {
	completed, failed int
	reasons           map[string]int
	payments          map[string]int // status of the failed checkouts' payments
	// reconciled: failed checkouts whose payment the saga reconciled;
	// givenUp: of those, the ones it gave up on.
	reconciled, givenUp int
	// late: the tokAmbiguous checkouts, how many were reconciled, how many
	// of them after their payment timer had fired (the late charge).
	late, lateReconciled, lateAfterTimer int
	// cancelled: orders the test cancelled; committed: of those, the ones
	// whose stock had been committed (units gone).
	cancelled, cancelledCommitted int
}

func (o outcome) String() string {
	return fmt.Sprintf("%d completed, %d failed %v; payments of the failed ones %v; %d failed ones reconciled (%d given up); "+
		"late charges: %d checkouts, %d reconciled, %d after their payment timer; orders cancelled while confirming: %d (%d after their stock was committed)",
		o.completed, o.failed, o.reasons, o.payments, o.reconciled, o.givenUp,
		o.late, o.lateReconciled, o.lateAfterTimer, o.cancelled, o.cancelledCommitted)
}

// providerBooks is the part of the payments simulator's books file that
// verify reads (services/payments/gateway/sim: done maps an idempotency
// key to the answer the provider stands by; auths maps an authorization's
// reference to its amount, captured and refunded; a void deletes it).
type providerBooks struct {
	Done map[string]struct {
		Status    int // gateway.Status: 1 approved, 2 declined
		Reference string
	} `json:"done"`
	Auths map[string][3]int64 `json:"auths"`
}

const providerApproved = 1

// authorizeKey is the provider idempotency key of a checkout's
// authorization (services/payments/domain AuthorizeKey).
func authorizeKey(checkoutID string) string { return domain.PaymentID(checkoutID) + "/authorize" }

func (h *harness) providerBooks() (providerBooks, error) {
	var bk providerBooks
	b, err := os.ReadFile(h.books)
	if err != nil {
		return bk, fmt.Errorf("provider books: %w", err)
	}
	if err := json.Unmarshal(b, &bk); err != nil {
		return bk, fmt.Errorf("provider books %s: %w", h.books, err)
	}
	return bk, nil
}

// verify reads every service's API and database, the payment provider's
// books and the carts commands, and checks that they agree.
func (h *harness) verify(ctx context.Context, cos []checkout) (outcome, error) {
	out := outcome{reasons: map[string]int{}, payments: map[string]int{}}
	took := map[string]int64{}
	var errs []error
	bk, err := h.providerBooks()
	if err != nil {
		return out, err
	}
	if err := h.readCartCommands(ctx); err != nil {
		return out, err
	}
	ours := map[string]bool{} // provider references of our checkouts' authorizations
	for _, co := range cos {
		var c domain.View
		var o struct {
			Status string `json:"status"`
		}
		var p struct {
			Status            string `json:"status"`
			CapturedMinor     int64  `json:"captured_minor"`
			RefundedMinor     int64  `json:"refunded_minor"`
			ProviderReference string `json:"provider_reference"`
		}
		if err := h.get("checkout", "/checkouts/"+co.id, &c); err != nil {
			return out, err
		}
		if err := h.get("orders", "/orders/"+domain.OrderID(co.id), &o); err != nil && !errors.Is(err, errNotFound) {
			return out, err
		}
		if err := h.get("payments", "/payments/"+domain.PaymentID(co.id), &p); errors.Is(err, errNotFound) {
			p.Status = "none"
		} else if err != nil {
			return out, err
		}
		// At the provider: the charge made under the payment's key, if
		// any, and what it still holds.
		answer, charged := bk.Done[authorizeKey(co.id)]
		charged = charged && answer.Status == providerApproved
		var auth [3]int64
		held := false
		if charged {
			ours[answer.Reference] = true
			auth, held = bk.Auths[answer.Reference]
		}
		rec := c.PaymentReconciliation
		givenUp := rec != nil && rec.GivenUp
		committed := false
		for _, st := range c.Steps {
			committed = committed || (st.Step == "commit_stock" && st.CompletedAt != nil)
		}
		wantCart := "CloseCart"
		switch c.Status {
		case "completed":
			out.completed++
			for s, q := range co.lines {
				took[s] += q
			}
			if o.Status != "paid" || p.Status != "captured" || p.CapturedMinor != co.total || p.RefundedMinor != 0 {
				errs = append(errs, fmt.Errorf("completed %s: order %q, payment %q captured %d refunded %d of %d",
					co.id, o.Status, p.Status, p.CapturedMinor, p.RefundedMinor, co.total))
			}
			// Captured once, for the total, at the provider too.
			if !charged || !held || auth != [3]int64{co.total, co.total, 0} || p.ProviderReference != answer.Reference {
				errs = append(errs, fmt.Errorf("completed %s: provider charged %v (reference %q, the service's %q), holds %v (held %v); want [%d %d 0]",
					co.id, charged, answer.Reference, p.ProviderReference, auth, held, co.total, co.total))
			}
		case "failed":
			out.failed++
			out.reasons[c.FailureReason]++
			out.payments[p.Status]++
			if rec != nil {
				out.reconciled++
				if givenUp {
					out.givenUp++
				}
			}
			if o.Status != "cancelled" && o.Status != "" {
				errs = append(errs, fmt.Errorf("failed %s (%s): order %q, want cancelled", co.id, c.FailureReason, o.Status))
			}
			// Nothing captured that is not refunded, and no authorization
			// left holding the customer's money, in the service's books...
			if p.Status == "captured" || p.Status == "authorized" || p.CapturedMinor != p.RefundedMinor {
				errs = append(errs, fmt.Errorf("failed %s (%s): payment %q captured %d refunded %d",
					co.id, c.FailureReason, p.Status, p.CapturedMinor, p.RefundedMinor))
			}
			// ... nor a payment left unknown, unless the saga says it gave
			// up reconciling it (an operator's case)...
			if p.Status == "unknown" && !givenUp {
				errs = append(errs, fmt.Errorf("failed %s (%s): payment unknown, reconciliation %+v", co.id, c.FailureReason, rec))
			}
			// ... nor at the provider: voided (absent) or refunded in full.
			if held && !(auth[1] > 0 && auth[2] == auth[1]) && !givenUp {
				errs = append(errs, fmt.Errorf("failed %s (%s): the provider still holds %v under %s (payment %q)",
					co.id, c.FailureReason, auth, answer.Reference, p.Status))
			}
			if c.FailureReason != "order_rejected" {
				wantCart = "ReopenCart"
			}
			// Committed before the turn back (an order cancelled while
			// confirming): those units left stock.
			if committed {
				for s, q := range co.lines {
					took[s] += q
				}
			}
		default:
			errs = append(errs, fmt.Errorf("checkout %s: status %q", co.id, c.Status))
		}
		switch {
		case h.cancelled[co.id]:
			// Rejected by the orders side while confirming: its capture
			// (queued before the cancel) refunded in full, its cart closed.
			out.cancelled++
			if committed {
				out.cancelledCommitted++
			}
			if c.Status != "failed" || c.FailureReason != "order_rejected" || p.Status != "refunded" ||
				p.CapturedMinor != co.total || p.RefundedMinor != co.total ||
				!held || auth != [3]int64{co.total, co.total, co.total} {
				errs = append(errs, fmt.Errorf("order of %s cancelled while confirming: checkout %s (%s), payment %q captured %d refunded %d, provider %v (held %v); want failed (order_rejected), all of %d refunded",
					co.id, c.Status, c.FailureReason, p.Status, p.CapturedMinor, p.RefundedMinor, auth, held, co.total))
			}
		case c.FailureReason == "order_rejected":
			errs = append(errs, fmt.Errorf("failed %s: order_rejected, but the test did not cancel its order", co.id))
		case h.late[co.id]:
			// Charged, unanswered: turned back, the charge found and voided.
			out.late++
			if rec != nil {
				out.lateReconciled++
				if c.TimedOut {
					out.lateAfterTimer++
				}
			}
			if c.Status != "failed" || c.FailureReason != "payment_timed_out" || !charged || held || p.Status != "voided" {
				errs = append(errs, fmt.Errorf("late charge %s: checkout %s (%s), charged %v, provider holds %v (%v), payment %q; want failed (payment_timed_out), charge voided",
					co.id, c.Status, c.FailureReason, charged, auth, held, p.Status))
			}
		}
		// The saga's last word to the carts service.
		if cmds := h.carts[co.id]; c.Status == "completed" || c.Status == "failed" {
			if len(cmds) != 1 || !cmds[wantCart] {
				errs = append(errs, fmt.Errorf("checkout %s %s (%s): carts.commands has %v, want %s", co.id, c.Status,
					c.FailureReason, sortedKeys(cmds), wantCart))
			}
		}
	}
	// Every charge at the provider is one of our checkouts'.
	for ref, a := range bk.Auths {
		if !ours[ref] {
			errs = append(errs, fmt.Errorf("the provider holds %v under %s, which is no checkout's authorization", a, ref))
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
			errs = append(errs, fmt.Errorf("%s: on hand %d, want %d received - %d taken by completed checkouts and committed cancelled ones",
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

// histories lists, for the first checkouts named in text, the events and
// commands of their streams in the checkout, orders and payments stores.
// verifyWithin runs verify until it holds, failing the test if it still
// does not after wait.
func (h *harness) verifyWithin(ctx context.Context, cos []checkout, wait time.Duration) outcome {
	h.t.Helper()
	for end := time.Now().Add(wait); ; {
		out, err := h.verify(ctx, cos)
		if err == nil {
			return out
		}
		if time.Now().After(end) {
			h.t.Fatalf("invariants do not hold: %v\n%s", err, h.histories(ctx, err.Error()))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (h *harness) histories(ctx context.Context, text string) string {
	var b strings.Builder
	seen := map[string]bool{}
	for _, id := range checkoutIDs.FindAllString(text, -1) {
		if seen[id] || len(seen) == 5 {
			continue
		}
		seen[id] = true
		fmt.Fprintf(&b, "history of %s:\n", id)
		for _, db := range []string{"checkout", "orders", "payments"} {
			rows, err := h.pools[db].Query(ctx, `SELECT stream_id, version, type, recorded_at FROM events
				WHERE stream_id LIKE '%' || $1 ORDER BY tx_id, global_position`, id)
			if err != nil {
				fmt.Fprintf(&b, "  %s: %v\n", db, err)
				continue
			}
			for rows.Next() {
				var stream, typ string
				var version int64
				var at time.Time
				if err := rows.Scan(&stream, &version, &typ, &at); err != nil {
					fmt.Fprintf(&b, "  %s: %v\n", db, err)
					break
				}
				fmt.Fprintf(&b, "  %s %s %s@%d %s\n", at.Format("15:04:05.000"), db, stream, version, typ)
			}
			rows.Close()
		}
	}
	return b.String()
}

var checkoutIDs = regexp.MustCompile(`co-[0-9]{4}-[0-9a-z]{12}`)

// readCartCommands reads carts.commands (committed records only: the
// saga's relay writes in transactions) from where it stopped into h.carts,
// until a poll finds nothing for a second.
func (h *harness) readCartCommands(ctx context.Context) error {
	if h.cartsClient == nil {
		h.cartsClient = testenv.Client(h.t, kgo.ConsumeTopics(h.prefix+topics.Commands("carts")),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	reg := codec.All()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := h.cartsClient.PollFetches(pctx)
		cancel()
		var errs []error
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				errs = append(errs, err)
			}
		})
		if len(errs) > 0 {
			return fmt.Errorf("read carts.commands: %w", errors.Join(errs...))
		}
		if fs.NumRecords() == 0 {
			return nil
		}
		for it := fs.RecordIter(); !it.Done(); {
			ev, err := wire.Event(it.Next())
			if err != nil {
				return fmt.Errorf("carts.commands: %w", err)
			}
			m, err := reg.Decode(ev.Type, ev.Payload)
			if err != nil {
				return fmt.Errorf("carts.commands: %w", err)
			}
			var id, typ string
			switch c := m.(type) {
			case *cartsv1.CloseCart:
				id, typ = c.GetCheckoutId(), "CloseCart"
			case *cartsv1.ReopenCart:
				id, typ = c.GetCheckoutId(), "ReopenCart"
			default:
				continue
			}
			if h.carts[id] == nil {
				h.carts[id] = map[string]bool{}
			}
			h.carts[id][typ] = true
		}
	}
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

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
