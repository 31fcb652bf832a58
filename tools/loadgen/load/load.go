// Package load drives simulated shoppers against Keel's HTTP APIs: each
// shopper creates a cart (carts API), adds lines from a skewed SKU mix,
// requests checkout with a payment token that chooses the payments
// simulator's outcome, then polls the saga's GET /checkouts/{id} until the
// checkout ends. Shoppers arrive on an open schedule (a fixed rate, whatever
// is in flight, up to a cap). The load generator (tools/loadgen) and the
// end-to-end bench (tools/bench -only checkout) run it.
//
// Latency is from the checkout request to the saga's ended_at (the time it
// recorded the checkout completed or failed), so it does not depend on how
// often the status is polled; the shoppers and the services must share a
// clock (one machine). The poll that saw the end gives the Observed figure.
package load

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
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/keel-commerce/keel/tools/seed/catalog"
)

// Config is one load run.
type Config struct {
	// CartsURL and CheckoutURL are the carts and checkout APIs' base URLs.
	CartsURL, CheckoutURL string
	// Rate is shoppers per second, Duration how long they keep arriving.
	Rate     float64
	Duration time.Duration
	// Warmup: shoppers arriving in the first Warmup run but are left out of
	// the latencies and the throughput.
	Warmup time.Duration
	// MaxInFlight caps the shoppers in flight; an arrival over the cap is
	// dropped (counted, never started).
	MaxInFlight int
	// SKUs are SKU(1)..SKU(SKUs), picked by Zipf exponent Zipf with a share
	// HotShare of all picks going to SKU(HotSKU).
	SKUs     int
	Zipf     float64
	HotShare float64
	HotSKU   int
	// MaxLines (distinct SKUs per cart) and MaxQuantity (per line) are drawn
	// uniformly from 1.
	MaxLines, MaxQuantity int
	// Mix is the share of each payment outcome.
	Mix Mix
	// Wait is how long a shopper waits for its checkout to end before
	// counting it stuck.
	Wait time.Duration
	// Shoppers long-poll the saga (GET /checkouts/{id}?until=ended&wait=),
	// one request per checkout as a rule. Poll is the pause after an answer
	// that came back early without the end (a saga without long polls);
	// pauses then back off, doubling, up to MaxPoll (default 8×Poll).
	// Latency comes from the saga's ended_at, not from when an answer came.
	Poll, MaxPoll time.Duration
	// Seed makes the shoppers' choices reproducible.
	Seed uint64
	// RunID names this run's carts (lg-<RunID>-<n>) and checkouts (co-…).
	RunID string
	// SKU names SKU i; default tools/seed/catalog's SKU-00001 form.
	SKU func(i int) string
	// Client makes the requests; default one sized for MaxInFlight.
	Client *http.Client
}

func (c *Config) check() error {
	var errs []error
	if c.CartsURL == "" || c.CheckoutURL == "" {
		errs = append(errs, errors.New("carts and checkout URLs are required"))
	}
	if c.Rate <= 0 || c.Duration <= 0 {
		errs = append(errs, fmt.Errorf("rate %v/s and duration %s must be positive", c.Rate, c.Duration))
	}
	if c.Warmup < 0 || c.Warmup >= c.Duration {
		errs = append(errs, fmt.Errorf("warm-up %s must be in [0, duration)", c.Warmup))
	}
	if c.MaxInFlight < 1 || c.MaxLines < 1 || c.MaxQuantity < 1 || c.MaxLines > 100 || c.MaxLines > c.SKUs {
		errs = append(errs, fmt.Errorf("max in flight %d, max lines %d (≤ 100 and ≤ SKUs), max quantity %d must be ≥ 1",
			c.MaxInFlight, c.MaxLines, c.MaxQuantity))
	}
	if len(c.Mix) == 0 {
		errs = append(errs, errors.New("payment mix is empty"))
	}
	if c.Wait <= 0 || c.Poll <= 0 {
		errs = append(errs, fmt.Errorf("wait %s and poll %s must be positive", c.Wait, c.Poll))
	}
	if c.RunID == "" {
		errs = append(errs, errors.New("run id is required"))
	}
	return errors.Join(errs...)
}

// NewClient is an HTTP client that keeps up to conns connections per host
// open, so a run does not churn through ports.
func NewClient(conns int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 0
	t.MaxIdleConnsPerHost = conns
	t.IdleConnTimeout = time.Minute
	t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}

// Milestones of a completed checkout, in order, as the step figures name
// them: accepted is the request → the saga's started_at (carts API, carts
// relay, the saga's consumer); the next three are the saga's forward steps;
// confirmed is the authorization → ended_at (confirm, commit, capture).
var Milestones = []string{"accepted", "place_order", "reserve_stock", "authorize_payment", "confirmed"}

// result is one shopper's end.
type result struct {
	arrived   time.Duration // after the start
	intent    Outcome
	outcome   string          // completed, failed:<reason>, error:<step>, stuck
	requested time.Time       // the checkout request was sent
	ended     time.Time       // the saga's ended_at
	observed  time.Time       // the poll that saw the end
	steps     []time.Duration // per Milestones, completed checkouts only
}

// Run drives shoppers for cfg.Duration, waits for those in flight (at most
// cfg.Wait each) and reports. progress, if not nil, is called about every
// second with the figures so far. Cancelling ctx stops arrivals and
// shoppers; the report then covers what ended.
func Run(ctx context.Context, cfg Config, progress func(Progress)) (*Report, error) {
	if cfg.Client == nil {
		cfg.Client = NewClient(cfg.MaxInFlight)
	}
	if cfg.SKU == nil {
		cfg.SKU = catalog.SKU
	}
	if cfg.MaxPoll < cfg.Poll {
		cfg.MaxPoll = 8 * cfg.Poll
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	skus, err := NewSKUMix(cfg.SKUs, cfg.Zipf, cfg.HotShare, cfg.HotSKU)
	if err != nil {
		return nil, err
	}
	g := &gen{cfg: cfg, skus: skus, rec: newRecorder(cfg)}
	sched := Schedule{Rate: cfg.Rate, Duration: cfg.Duration}
	start := time.Now()
	g.rec.start = start
	stopProgress := make(chan struct{})
	var progressDone sync.WaitGroup
	if progress != nil {
		progressDone.Go(func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case now := <-t.C:
					progress(g.rec.progress(now))
				}
			}
		})
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, cfg.MaxInFlight)
	launched := 0
	total := sched.Total()
	for launched < total && ctx.Err() == nil {
		if wait := sched.At(launched) - time.Since(start); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
		for due := sched.Due(time.Since(start)); launched < due && ctx.Err() == nil; launched++ {
			i, arrived := launched, sched.At(launched)
			select {
			case sem <- struct{}{}:
			default:
				g.rec.drop()
				continue
			}
			g.rec.begin()
			wg.Go(func() {
				defer func() { <-sem }()
				g.rec.end(g.shop(ctx, i, arrived))
			})
		}
	}
	wg.Wait()
	close(stopProgress)
	progressDone.Wait()
	if progress != nil {
		progress(g.rec.progress(time.Now()))
	}
	return g.rec.report(), ctx.Err()
}

type gen struct {
	cfg  Config
	skus *SKUMix
	rec  *recorder
}

// shop is one shopper, from cart to the checkout's end.
func (g *gen) shop(ctx context.Context, i int, arrived time.Duration) result {
	rng := rand.New(rand.NewPCG(g.cfg.Seed, uint64(i)))
	r := result{arrived: arrived}
	cart := fmt.Sprintf("lg-%s-%d", g.cfg.RunID, i)
	checkout := "co-" + cart
	if err := g.post(ctx, g.cfg.CartsURL+"/carts", cart+":create",
		map[string]any{"cart_id": cart, "customer_id": "cus-" + cart, "currency": "EUR"}); err != nil {
		r.outcome = "error:create_cart" + err.Error()
		return r
	}
	lines := 1 + rng.IntN(g.cfg.MaxLines)
	picked := map[int]bool{}
	for len(picked) < lines {
		sku := g.skus.Pick(rng.Float64(), rng.Float64())
		if picked[sku] {
			if len(picked) >= g.cfg.SKUs {
				break
			}
			continue
		}
		picked[sku] = true
		qty := 1 + rng.IntN(g.cfg.MaxQuantity)
		if err := g.post(ctx, g.cfg.CartsURL+"/carts/"+cart+"/lines", fmt.Sprintf("%s:add:%d", cart, sku),
			map[string]any{"sku": g.cfg.SKU(sku), "quantity": qty}); err != nil {
			r.outcome = "error:add_line" + err.Error()
			return r
		}
	}
	r.intent = g.cfg.Mix.Pick(rng.Float64())
	body := map[string]any{
		"checkout_id": checkout,
		"customer":    map[string]any{"customer_id": "cus-" + cart, "email": "shopper@example.com"},
		"shipping_address": map[string]any{"name": "Load Shopper", "line1": "1 Main St", "city": "Berlin",
			"postal_code": "10115", "country_code": "DE"},
		"payment_method": map[string]any{"kind": "card", "token": r.intent.Token()},
	}
	r.requested = time.Now()
	if err := g.post(ctx, g.cfg.CartsURL+"/carts/"+cart+"/checkout", cart+":checkout", body); err != nil {
		r.outcome = "error:checkout" + err.Error()
		return r
	}
	g.await(ctx, checkout, &r)
	return r
}

// longPoll bounds one long poll of the saga.
const longPoll = 10 * time.Second

// await long-polls the checkout until it ends or the wait is over.
func (g *gen) await(ctx context.Context, id string, r *result) {
	deadline := r.requested.Add(g.cfg.Wait)
	every := g.cfg.Poll
	pause := false // after an early answer without the end
	for {
		if pause {
			t := time.NewTimer(min(every, max(time.Until(deadline), 0)))
			select {
			case <-ctx.Done():
				t.Stop()
				r.outcome = "error:cancelled"
				return
			case <-t.C:
			}
			every = min(every*2, g.cfg.MaxPoll)
		}
		wait := min(longPoll, max(time.Until(deadline), 0)).Truncate(time.Millisecond)
		asked := time.Now()
		v, err := g.view(ctx, id, wait)
		if ctx.Err() != nil {
			r.outcome = "error:cancelled"
			return
		}
		now := time.Now()
		if err == nil && v != nil && (v.Status == "completed" || v.Status == "failed") {
			r.observed, r.ended = now, now
			if v.EndedAt != nil {
				r.ended = *v.EndedAt
			}
			if v.Status == "failed" {
				r.outcome = "failed:" + v.FailureReason
				return
			}
			r.outcome = "completed"
			r.steps = v.milestones(r.requested, r.ended)
			return
		}
		if !now.Before(deadline) {
			r.outcome = "stuck"
			if err != nil {
				r.outcome = "error:status" + err.Error()
			} else if v != nil {
				r.outcome = "stuck:" + v.Status
			}
			return
		}
		// A long poll that waited is asked again at once; an early answer
		// (an error, a saga without long polls) after a pause.
		pause = err != nil || now.Sub(asked) < wait/2
	}
}

// view is the part of GET /checkouts/{id} the shoppers read.
type view struct {
	Status        string     `json:"status"`
	FailureReason string     `json:"failure_reason"`
	StartedAt     time.Time  `json:"started_at"`
	EndedAt       *time.Time `json:"ended_at"`
	Steps         []struct {
		Step        string     `json:"step"`
		CompletedAt *time.Time `json:"completed_at"`
	} `json:"steps"`
}

// milestones splits requested→ended into the Milestones' durations.
func (v *view) milestones(requested, ended time.Time) []time.Duration {
	at := map[string]time.Time{"accepted": v.StartedAt, "confirmed": ended}
	for _, s := range v.Steps {
		if s.CompletedAt != nil {
			at[s.Step] = *s.CompletedAt
		}
	}
	out := make([]time.Duration, 0, len(Milestones))
	prev := requested
	for _, m := range Milestones {
		t, ok := at[m]
		if !ok || t.IsZero() {
			return nil
		}
		out = append(out, t.Sub(prev))
		prev = t
	}
	return out
}

// recorder collects the shoppers' results; safe for concurrent use.
type recorder struct {
	cfg      Config
	start    time.Time
	mu       sync.Mutex
	started  int
	inFlight int
	dropped  int
	results  []result
	lastN    int
	lastAt   time.Time
}

func newRecorder(cfg Config) *recorder { return &recorder{cfg: cfg} }

func (r *recorder) begin() { r.mu.Lock(); r.started++; r.inFlight++; r.mu.Unlock() }
func (r *recorder) drop()  { r.mu.Lock(); r.dropped++; r.mu.Unlock() }

func (r *recorder) end(res result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight--
	r.results = append(r.results, res)
}

// Progress is the live state of a run.
type Progress struct {
	Elapsed   time.Duration
	Started   int
	Completed int
	Failed    map[string]int // by reason, and errors and stuck by kind
	InFlight  int
	Dropped   int
	Rate      float64 // checkouts ended per second since the last progress
	P50, P99  time.Duration
}

func (r *recorder) progress(now time.Time) Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := Progress{Elapsed: now.Sub(r.start), Started: r.started, InFlight: r.inFlight, Dropped: r.dropped, Failed: map[string]int{}}
	var lats []time.Duration
	for _, res := range r.results {
		if res.outcome == "completed" {
			p.Completed++
			lats = append(lats, res.ended.Sub(res.requested))
		} else {
			p.Failed[res.outcome]++
		}
	}
	if !r.lastAt.IsZero() && now.After(r.lastAt) {
		p.Rate = float64(len(r.results)-r.lastN) / now.Sub(r.lastAt).Seconds()
	}
	r.lastN, r.lastAt = len(r.results), now
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	p.P50, p.P99 = Quantile(lats, 0.5), Quantile(lats, 0.99)
	return p
}

// String is the progress line.
func (p Progress) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%5.0fs started %d completed %d", p.Elapsed.Seconds(), p.Started, p.Completed)
	keys := make([]string, 0, len(p.Failed))
	for k := range p.Failed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s %d", k, p.Failed[k])
	}
	fmt.Fprintf(&b, " in-flight %d", p.InFlight)
	if p.Dropped > 0 {
		fmt.Fprintf(&b, " dropped %d", p.Dropped)
	}
	fmt.Fprintf(&b, " | %.0f/s | p50 %s p99 %s", p.Rate, p.P50.Round(time.Millisecond), p.P99.Round(time.Millisecond))
	return b.String()
}

// Report is a run's outcome.
type Report struct {
	RunID       string  `json:"run_id"`
	OfferedRate float64 `json:"offered_per_s"`
	DurationS   float64 `json:"duration_s"`
	WarmupS     float64 `json:"warmup_s"`
	Mix         string  `json:"payment_mix"`
	// Arrivals were due; Started began (Dropped were over the cap).
	Arrivals int `json:"arrivals"`
	Started  int `json:"started"`
	Dropped  int `json:"dropped"`
	// Outcomes counts every started shopper's end: completed,
	// failed:<reason>, error:<step><status>, stuck:<status>.
	Outcomes map[string]int `json:"outcomes"`
	// ByPayment counts the ends per requested payment outcome.
	ByPayment map[Outcome]map[string]int `json:"by_payment"`
	// CompletedPerS and EndedPerS are the checkouts that completed (ended
	// either way) inside the measured window (warm-up to duration), per
	// second: the system's departure rate, whenever they arrived.
	CompletedPerS float64 `json:"completed_per_s"`
	EndedPerS     float64 `json:"ended_per_s"`
	// Latency is request → completed (the saga's ended_at) of the measured
	// completed checkouts; Observed the same to the poll that saw it;
	// FailedLatency request → failed.
	Latency       Latency `json:"latency"`
	Observed      Latency `json:"observed"`
	FailedLatency Latency `json:"failed_latency"`
	// Steps splits Latency by Milestones.
	Steps map[string]Latency `json:"steps"`
	// WallS is the whole run including the drain of shoppers in flight.
	WallS float64 `json:"wall_s"`
}

func (r *recorder) report() *Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.cfg
	rep := &Report{RunID: c.RunID, OfferedRate: c.Rate, DurationS: c.Duration.Seconds(), WarmupS: c.Warmup.Seconds(),
		Mix: c.Mix.String(), Arrivals: Schedule{Rate: c.Rate, Duration: c.Duration}.Total(), Started: r.started,
		Dropped: r.dropped, Outcomes: map[string]int{}, ByPayment: map[Outcome]map[string]int{},
		Steps: map[string]Latency{}, WallS: time.Since(r.start).Seconds()}
	winStart, winEnd := r.start.Add(c.Warmup), r.start.Add(c.Duration)
	var lat, obs, failed []time.Duration
	steps := make([][]time.Duration, len(Milestones))
	completed, ended := 0, 0
	for _, res := range r.results {
		rep.Outcomes[res.outcome]++
		if res.intent != "" {
			if rep.ByPayment[res.intent] == nil {
				rep.ByPayment[res.intent] = map[string]int{}
			}
			rep.ByPayment[res.intent][res.outcome]++
		}
		done := res.outcome == "completed"
		if !done && !strings.HasPrefix(res.outcome, "failed:") {
			continue
		}
		if !res.ended.Before(winStart) && res.ended.Before(winEnd) {
			ended++
			if done {
				completed++
			}
		}
		if res.arrived < c.Warmup {
			continue
		}
		if !done {
			failed = append(failed, res.ended.Sub(res.requested))
			continue
		}
		lat = append(lat, res.ended.Sub(res.requested))
		obs = append(obs, res.observed.Sub(res.requested))
		if len(res.steps) == len(Milestones) {
			for i, d := range res.steps {
				steps[i] = append(steps[i], d)
			}
		}
	}
	window := (c.Duration - c.Warmup).Seconds()
	rep.CompletedPerS, rep.EndedPerS = float64(completed)/window, float64(ended)/window
	rep.Latency, rep.Observed, rep.FailedLatency = Summarize(lat), Summarize(obs), Summarize(failed)
	for i, m := range Milestones {
		rep.Steps[m] = Summarize(steps[i])
	}
	return rep
}

// statusError is a command's or read's failure: the HTTP status, or 0 when
// the request got no answer. Its text is appended to the outcome's step.
type statusError int

func (e statusError) Error() string {
	if e == 0 {
		return ":transport"
	}
	return fmt.Sprintf(":%d", int(e))
}

// post sends a command with its Idempotency-Key, retrying transport errors
// and 5xx answers twice (the key makes a retry safe).
func (g *gen) post(ctx context.Context, url, key string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	var last error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return last
			case <-time.After(time.Duration(50<<attempt) * time.Millisecond):
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		res, err := g.cfg.Client.Do(req)
		if err != nil {
			last = statusError(0)
			continue
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode < 300 {
			return nil
		}
		last = statusError(res.StatusCode)
		if res.StatusCode < 500 {
			return last
		}
	}
	return last
}

// view reads GET /checkouts/{id}; nil, nil while the saga has not seen the
// checkout yet (404).
func (g *gen) view(ctx context.Context, id string, wait time.Duration) (*view, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.cfg.CheckoutURL+"/checkouts/"+id+"?until=ended&wait="+wait.String(), nil)
	if err != nil {
		return nil, err
	}
	res, err := g.cfg.Client.Do(req)
	if err != nil {
		return nil, statusError(0)
	}
	defer res.Body.Close()
	switch res.StatusCode {
	case http.StatusOK:
		var v view
		if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
			return nil, err
		}
		return &v, nil
	case http.StatusNotFound:
		_, _ = io.Copy(io.Discard, res.Body)
		return nil, nil
	}
	_, _ = io.Copy(io.Discard, res.Body)
	return nil, statusError(res.StatusCode)
}
