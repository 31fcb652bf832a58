package load

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeShop stands in for the carts and checkout APIs: a checkout asked
// with tok_approve completes, tok_decline fails, any other never ends;
// the first status read of each checkout is a 404 (the saga has not seen
// it yet).
type fakeShop struct {
	mu      sync.Mutex
	tokens  map[string]string // checkout id → token
	reads   map[string]int
	keys    map[string]int // Idempotency-Key → posts
	lines   int
	badSKUs int
}

func (f *fakeShop) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /carts", func(w http.ResponseWriter, r *http.Request) { f.key(r); w.WriteHeader(http.StatusCreated) })
	mux.HandleFunc("POST /carts/{id}/lines", func(w http.ResponseWriter, r *http.Request) {
		f.key(r)
		var b struct {
			SKU      string `json:"sku"`
			Quantity int    `json:"quantity"`
		}
		_ = json.NewDecoder(r.Body).Decode(&b)
		f.mu.Lock()
		f.lines++
		if !strings.HasPrefix(b.SKU, "SKU-") || b.Quantity < 1 || b.Quantity > 2 {
			f.badSKUs++
		}
		f.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("POST /carts/{id}/checkout", func(w http.ResponseWriter, r *http.Request) {
		f.key(r)
		var b struct {
			CheckoutID    string `json:"checkout_id"`
			PaymentMethod struct {
				Token string `json:"token"`
			} `json:"payment_method"`
		}
		_ = json.NewDecoder(r.Body).Decode(&b)
		f.mu.Lock()
		f.tokens[b.CheckoutID] = b.PaymentMethod.Token
		f.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("GET /checkouts/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		f.mu.Lock()
		tok, ok := f.tokens[id]
		f.reads[id]++
		first := f.reads[id] == 1
		f.mu.Unlock()
		if !ok || first {
			http.NotFound(w, r)
			return
		}
		now := time.Now().UTC()
		v := map[string]any{"status": "started", "started_at": now}
		switch tok {
		case "tok_approve":
			v["status"], v["ended_at"] = "completed", now
			var steps []map[string]any
			for _, s := range []string{"place_order", "reserve_stock", "authorize_payment", "confirm_order", "commit_stock", "capture_payment"} {
				steps = append(steps, map[string]any{"step": s, "completed_at": now})
			}
			v["steps"] = steps
		case "tok_decline":
			v["status"], v["ended_at"], v["failure_reason"] = "failed", now, "payment_declined"
		}
		_ = json.NewEncoder(w).Encode(v)
	})
	return mux
}

func (f *fakeShop) key(r *http.Request) {
	f.mu.Lock()
	f.keys[r.Header.Get("Idempotency-Key")]++
	f.mu.Unlock()
}

func TestRunDrivesWholeCheckouts(t *testing.T) {
	f := &fakeShop{tokens: map[string]string{}, reads: map[string]int{}, keys: map[string]int{}}
	srv := httptest.NewServer(f.handler())
	defer srv.Close()
	mix, err := ParseMix("approve=8,decline=1")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{CartsURL: srv.URL, CheckoutURL: srv.URL, Rate: 400, Duration: 250 * time.Millisecond,
		MaxInFlight: 1000, SKUs: 50, Zipf: 1, HotShare: 0.2, HotSKU: 3, MaxLines: 3, MaxQuantity: 2,
		Mix: mix, Wait: time.Minute, Poll: 5 * time.Millisecond, Seed: 9, RunID: "t"}
	var progressed bool
	rep, err := Run(context.Background(), cfg, func(p Progress) { progressed = progressed || p.Started > 0 })
	if err != nil {
		t.Fatal(err)
	}
	if rep.Arrivals != 100 || rep.Started != 100 || rep.Dropped != 0 || !progressed {
		t.Fatalf("arrivals %d, started %d, dropped %d, progress %v", rep.Arrivals, rep.Started, rep.Dropped, progressed)
	}
	// Every shopper ends as its token says; the same seed asks the same.
	asked := map[Outcome]int{}
	for o, ends := range rep.ByPayment {
		for end, n := range ends {
			asked[o] += n
			want := map[Outcome]string{Approve: "completed", Decline: "failed:payment_declined"}[o]
			if end != want {
				t.Errorf("asked %s, ended %s ×%d", o, end, n)
			}
		}
	}
	if asked[Approve] != rep.Outcomes["completed"] || asked[Approve]+asked[Decline] != 100 || asked[Approve] < 60 {
		t.Fatalf("outcomes %v, by payment %v", rep.Outcomes, rep.ByPayment)
	}
	if rep.Latency.N != rep.Outcomes["completed"] || rep.Steps["confirmed"].N != rep.Latency.N || rep.FailedLatency.N != asked[Decline] {
		t.Fatalf("latency %+v, steps %+v, failed %+v", rep.Latency, rep.Steps, rep.FailedLatency)
	}
	// Each command was posted once under its own key; lines are valid.
	f.mu.Lock()
	for k, n := range f.keys {
		if n != 1 || k == "" {
			t.Fatalf("key %q posted %d times", k, n)
		}
	}
	if len(f.keys) != 200+f.lines || f.badSKUs != 0 || f.lines < 100 {
		t.Fatalf("%d keys, %d lines, %d bad", len(f.keys), f.lines, f.badSKUs)
	}
	f.mu.Unlock()
	cfg.RunID = "t2"
	again, err := Run(context.Background(), cfg, nil)
	if err != nil || again.ByPayment[Approve]["completed"] != rep.ByPayment[Approve]["completed"] {
		t.Fatalf("same seed, other choices: %v vs %v (%v)", again.ByPayment, rep.ByPayment, err)
	}
	// A checkout that never ends counts as stuck in its last status once
	// the wait is over (the fake never ends tok_timeout's).
	cfg.RunID, cfg.Rate, cfg.Duration, cfg.Wait = "t3", 10, 50*time.Millisecond, 200*time.Millisecond
	cfg.Mix = Mix{Timeout: 1}
	stuck, err := Run(context.Background(), cfg, nil)
	// "stuck:started", or plain "stuck" if a slow machine's first poll came
	// after the wait, when the fake still answered 404.
	if err != nil || stuck.Outcomes["stuck:started"]+stuck.Outcomes["stuck"] != 1 || len(stuck.Outcomes) != 1 {
		t.Fatalf("never-ending checkout: %v (%v)", stuck.Outcomes, err)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	if _, err := Run(context.Background(), Config{}, nil); err == nil {
		t.Fatal("empty config accepted")
	}
}
