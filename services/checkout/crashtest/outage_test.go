package crashtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keel-commerce/keel/events/testenv"
)

// TestOutages runs the crash test's processes (stock, orders, payments,
// the checkout saga, three relays) against a PostgreSQL server and a
// Kafka broker of the test's own, and under a running checkout flow:
//
//   - kills the saga (SIGKILL) and starts it again, several times: its
//     partitions must move again within seconds (a static group member
//     takes its assignment back instead of waiting out the dead member's
//     session; measured from the restart to the first new checkout the
//     saga records, median logged);
//   - stops PostgreSQL (fast: every session gets FATAL 57P01) for
//     outageFor, then starts it again;
//   - stops the broker (SIGTERM) for outageFor, then starts it again.
//
// Meanwhile a client sends stock receipts (each retried under its
// Idempotency-Key until it succeeds) and reads a checkout and a stock
// level. It asserts that no process exits, that no answer was a 500 and
// every 503 carried Retry-After (PostgreSQL down: 503 seen, /readyz 503),
// that checkouts complete again within seconds of each dependency's
// return, that every checkout ends, and the crash test's books (each
// receipt applied exactly once among them).
func TestOutages(t *testing.T) {
	repo := testenv.Root(t)
	pg := startPrivatePG(t)
	kafka := startPrivateKafka(t, repo)
	t.Setenv("KEEL_PG_URL", pg.URL())
	t.Setenv("KEEL_KAFKA_BROKERS", kafka.Brokers())
	began := time.Now()
	h := newHarness(t, build(t))
	h.startAll()
	h.procs["checkout"].start()
	h.procs["checkout"].waitReady()
	h.seedStock()
	ctx := context.Background()
	t.Logf("private stack and processes up in %s", time.Since(began).Round(time.Millisecond))

	const n = 150
	cos := h.checkouts(n, n, 0)
	produced := 0
	produce := func(k int) {
		k = min(k, n-produced)
		h.produce(cos[produced : produced+k])
		produced += k
	}

	// Kill -9 and restart of a consumer: time to its partitions moving.
	var took []time.Duration
	for range 5 {
		saga := h.procs["checkout"]
		saga.kill()
		batch := cos[produced:min(produced+3, n)]
		produce(3)
		saga.start()
		restarted := time.Now()
		ids := make([]string, len(batch))
		for i, co := range batch {
			ids[i] = co.id
		}
		for h.seen(ctx, ids) == 0 {
			if time.Since(restarted) > time.Minute {
				t.Fatalf("a minute after the saga's restart its partitions have not moved")
			}
			time.Sleep(20 * time.Millisecond)
		}
		took = append(took, time.Since(restarted))
		saga.waitReady()
	}
	slices.Sort(took)
	t.Logf("saga killed and restarted %d times: first new checkout recorded after %v (median %s)",
		len(took), took, took[len(took)/2].Round(time.Millisecond))
	if med := took[len(took)/2]; med > 10*time.Second {
		t.Errorf("median take-over after a restart %s, want a few seconds", med)
	}

	pr := h.startProbe(ctx)
	// PostgreSQL down under load, then back.
	produce(40)
	time.Sleep(time.Second)
	pg.stop()
	down := time.Now()
	produce(30)
	time.Sleep(outageFor)
	h.allRunning("while PostgreSQL was down")
	pg.start()
	t.Logf("PostgreSQL down for %s", time.Since(down).Round(time.Millisecond))
	h.resumed("PostgreSQL", pr)

	// The broker down under load, then back.
	produce(40)
	time.Sleep(time.Second)
	kafka.stop()
	down = time.Now()
	time.Sleep(outageFor)
	h.allRunning("while the broker was down")
	kafka.start()
	t.Logf("broker down for %s", time.Since(down).Round(time.Millisecond))
	h.resumed("the broker", pr)
	produce(n)
	pr.stop()

	deadline := time.Now().Add(3 * time.Minute)
	for h.ended(ctx) < n {
		if time.Now().After(deadline) {
			t.Fatalf("after 3 minutes %d of %d checkouts ended; some that did not:\n%s", h.ended(ctx), n, h.stuck(ctx))
		}
		time.Sleep(200 * time.Millisecond)
	}
	h.allRunning("at the end")
	if pr.unavailable == 0 || pr.notReady == 0 {
		t.Errorf("no 503 (%d) or /readyz 503 (%d) seen while PostgreSQL was down: the probe missed the outage", pr.unavailable, pr.notReady)
	}
	for _, b := range pr.bad {
		t.Error(b)
	}
	t.Logf("probe: %d receipts (%d retried), answers %v", pr.receipts, pr.retried, pr.statuses)
	h.verifyWithin(ctx, cos, 2*time.Minute)
	t.Logf("every checkout ended, books agree; %s in all", time.Since(began).Round(time.Millisecond))
}

// outageFor is how long each dependency stays down.
const outageFor = 10 * time.Second

// seen counts the checkouts of ids the saga has recorded.
func (h *harness) seen(ctx context.Context, ids []string) int {
	var k int
	err := h.pools["checkout"].QueryRow(ctx, `SELECT count(*) FROM checkout_sagas WHERE checkout_id = ANY($1)`, ids).Scan(&k)
	if err != nil {
		return 0 // not migrated yet, or the server is down
	}
	return k
}

// ended counts the checkouts that ended, -1 while the server cannot say.
func (h *harness) ended(ctx context.Context) int {
	var k int
	err := h.pools["checkout"].QueryRow(ctx, `SELECT count(*) FROM checkout_sagas WHERE status IN ('completed', 'failed')`).Scan(&k)
	if err != nil {
		return -1
	}
	return k
}

// allRunning fails the test if a process exited.
func (h *harness) allRunning(when string) {
	h.t.Helper()
	for _, name := range sortedKeys(h.procs) {
		select {
		case <-h.procs[name].done:
			h.t.Fatalf("%s exited %s:\n%s", name, when, h.procs[name].tail())
		default:
		}
	}
}

// resumed waits for the first checkout to end after what came back, and
// fails the test unless it did within resumeWithin.
func (h *harness) resumed(what string, pr *probe) {
	h.t.Helper()
	back := time.Now()
	ctx := context.Background()
	before := h.ended(ctx)
	for before < 0 {
		time.Sleep(50 * time.Millisecond)
		before = h.ended(ctx)
	}
	for h.ended(ctx) <= before {
		if time.Since(back) > 2*resumeWithin {
			h.t.Fatalf("no checkout ended in %s after %s came back", 2*resumeWithin, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(back)
	h.t.Logf("first checkout ended %s after %s came back", took.Round(time.Millisecond), what)
	if took > resumeWithin {
		h.t.Errorf("first checkout ended %s after %s came back, want within %s", took.Round(time.Millisecond), what, resumeWithin)
	}
	h.allRunning("after " + what + " came back")
}

// resumeWithin bounds the wait for the first completion after an outage:
// the supervisor's back-off (at most a few seconds by then), the relays'
// and consumers' reconnects, and a checkout's remaining steps.
const resumeWithin = 15 * time.Second

// probe is the client of the outages: stock receipts under an
// Idempotency-Key, each retried until it succeeds, and reads.
type probe struct {
	h        *harness
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	statuses map[string]int // "GET /readyz 503" → count
	bad      []string
	// unavailable counts 503 problems, notReady 503s of /readyz.
	unavailable, notReady int
	receipts, retried     int
}

func (h *harness) startProbe(ctx context.Context) *probe {
	ctx, cancel := context.WithCancel(ctx)
	p := &probe{h: h, cancel: cancel, statuses: map[string]int{}}
	p.wg.Go(func() { p.receive(ctx) })
	p.wg.Go(func() { p.read(ctx) })
	return p
}

func (p *probe) stop() {
	p.cancel()
	p.wg.Wait()
}

// receive books one unit of CT-A into wh-2 every 100 ms; each receipt is
// retried under its key until it is answered 2xx, also after ctx ended
// (until then it may or may not have been applied), and only then counted
// in the books verify checks.
func (p *probe) receive(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		key := fmt.Sprintf("outage-receipt-%d", i)
		for attempt := 0; ; attempt++ {
			status := p.do(http.MethodPost, "stock", "/stock/CT-A/receive", key, `{"warehouse_id":"wh-2","quantity":1}`)
			if status >= 200 && status < 300 {
				p.mu.Lock()
				p.h.received["CT-A"]++
				p.receipts++
				if attempt > 0 {
					p.retried++
				}
				p.mu.Unlock()
				break
			}
			if attempt > 600 {
				p.fail("receipt %s not accepted after 600 attempts", key)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *probe) read(ctx context.Context) {
	for ctx.Err() == nil {
		p.do(http.MethodGet, "stock", "/stock/CT-A", "", "")
		p.do(http.MethodGet, "checkout", "/checkouts/"+"co-0000-"+p.h.prefix[6:18], "", "")
		p.do(http.MethodGet, "stock", "/readyz", "", "")
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// do sends one request and checks its answer: never a 500, a 503 always
// with Retry-After (but /readyz's). It returns the status, 0 if none came.
func (p *probe) do(method, svc, path, key, body string) int {
	req, err := http.NewRequest(method, "http://"+p.h.procs[svc].addr+path, strings.NewReader(body))
	if err != nil {
		p.fail("%v", err)
		return 0
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.h.http.Do(req)
	if err != nil {
		return 0 // a process restarting: the supervisor's business (allRunning checks none exits)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	what := method + " " + svc + " " + strings.SplitN(path, "/", 3)[1]
	p.mu.Lock()
	defer p.mu.Unlock()
	p.statuses[fmt.Sprintf("%s %d", what, resp.StatusCode)]++
	switch {
	case resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable:
		p.bad = append(p.bad, fmt.Sprintf("%s %s: %s %s", method, path, resp.Status, b))
	case resp.StatusCode == http.StatusServiceUnavailable && path == "/readyz":
		p.notReady++
	case resp.StatusCode == http.StatusServiceUnavailable:
		p.unavailable++
		if resp.Header.Get("Retry-After") == "" {
			p.bad = append(p.bad, fmt.Sprintf("%s %s: 503 without Retry-After: %s", method, path, b))
		}
	}
	return resp.StatusCode
}

func (p *probe) fail(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bad = append(p.bad, fmt.Sprintf(format, args...))
}
