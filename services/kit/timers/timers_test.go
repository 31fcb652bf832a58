package timers_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/services/kit/timers"
)

// table is a timer table as a service's migration leaves it: its key,
// due_at, a column of its own, and the queue's three columns.
const table = `CREATE TABLE test_timers (
	id         text PRIMARY KEY,
	due_at     timestamptz NOT NULL,
	note       text NOT NULL DEFAULT '',
	attempts   integer NOT NULL DEFAULT 0,
	retry_at   timestamptz,
	last_error text
)`

func setup(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, table); err != nil {
		t.Fatal(err)
	}
	return pool
}

// clock is a test clock, moved by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time)     { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }
func (c *clock) Add(d time.Duration) { c.Set(c.Now().Add(d)) }

// TestFailingTimerBacksOffOthersFire: one timer, due before all others,
// fails on every attempt while 100 others come due. Every one of the 100
// fires in the first round; the failing one is tried again only after its
// back-off, which doubles at each failure up to the cap, and every failure
// is counted.
func TestFailingTimerBacksOffOthersFire(t *testing.T) {
	ctx := context.Background()
	pool := setup(t)
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	clk := &clock{now: start}
	if _, err := pool.Exec(ctx, `INSERT INTO test_timers (id, due_at, note) VALUES ('poison', $1, 'fails')`, start.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := pool.Exec(ctx, `INSERT INTO test_timers (id, due_at) VALUES ($1, $2)`,
			fmt.Sprintf("t%03d", i), start.Add(time.Duration(i)*time.Millisecond-time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	fired := map[string]int{}
	poisonTries := 0
	reg := prometheus.NewRegistry()
	q, err := timers.New(pool, timers.Config{
		Name: "test", Table: "test_timers", Key: []string{"id"}, Data: []string{"note"},
		Now: clk.Now, Backoff: time.Second, MaxBackoff: 10 * time.Second, Registerer: reg,
		Fire: func(ctx context.Context, tm timers.Timer) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			if tm.Data[0] == "fails" {
				poisonTries++
				return false, errors.New("persistent failure")
			}
			fired[tm.Key[0]]++
			_, err := pool.Exec(ctx, `DELETE FROM test_timers WHERE id = $1`, tm.Key[0])
			return true, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	n, err := q.FireDue(ctx)
	if err != nil || n != 100 {
		t.Fatalf("first round fired %d (%v), want 100", n, err)
	}
	if len(fired) != 100 {
		t.Fatalf("%d distinct timers fired, want 100", len(fired))
	}
	for id, k := range fired {
		if k != 1 {
			t.Errorf("timer %s fired %d times", id, k)
		}
	}
	if err := q.Observe(ctx); err != nil {
		t.Fatal(err)
	}
	if got := value(t, reg, "keel_timers_due"); got != 1 {
		t.Errorf("keel_timers_due = %v, want 1 (the backing-off timer)", got)
	}
	if got := value(t, reg, "keel_timers_oldest_due_age_seconds"); got != 3600 {
		t.Errorf("keel_timers_oldest_due_age_seconds = %v, want 3600", got)
	}

	// The failing timer's attempts: each one only once its back-off is
	// over, each back-off double the last, up to the 10 s cap.
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i, d := range want {
		var retryAt time.Time
		var attempts int
		var lastErr string
		if err := pool.QueryRow(ctx, `SELECT retry_at, attempts, last_error FROM test_timers WHERE id = 'poison'`).Scan(&retryAt, &attempts, &lastErr); err != nil {
			t.Fatal(err)
		}
		if got := retryAt.Sub(clk.Now()); got != d {
			t.Errorf("after failure %d: next attempt in %s, want %s", i+1, got, d)
		}
		if attempts != i+1 || lastErr != "persistent failure" {
			t.Errorf("after failure %d: attempts %d, last_error %q", i+1, attempts, lastErr)
		}
		if got := value(t, reg, "keel_timers_failures_total"); got != float64(i+1) {
			t.Errorf("after failure %d: keel_timers_failures_total = %v", i+1, got)
		}
		clk.Add(d - time.Millisecond)
		if _, err := q.FireDue(ctx); err != nil {
			t.Fatal(err)
		}
		if poisonTries != i+1 {
			t.Fatalf("tried %d times before its back-off of %s was over, want %d", poisonTries, d, i+1)
		}
		clk.Add(time.Millisecond)
		if _, err := q.FireDue(ctx); err != nil {
			t.Fatal(err)
		}
		if poisonTries != i+2 {
			t.Fatalf("tried %d times once its back-off of %s was over, want %d", poisonTries, d, i+2)
		}
	}
	if got := value(t, reg, "keel_timers_fired_total"); got != 100 {
		t.Errorf("keel_timers_fired_total = %v, want 100", got)
	}
}

// value is the value of the one series of metric name in reg.
func value(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) != 1 {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("no single series of %s", name)
	return 0
}

// TestReplicasFireEachTimerOnce: four queues on one table, as four
// replicas would run, fire 300 due timers together; SKIP LOCKED and the
// lease give each timer to exactly one of them.
func TestReplicasFireEachTimerOnce(t *testing.T) {
	ctx := context.Background()
	pool := setup(t)
	now := time.Now()
	if _, err := pool.Exec(ctx, `INSERT INTO test_timers (id, due_at) SELECT 'r' || i, $1 FROM generate_series(1, 300) i`, now.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	fired := map[string]int{}
	var wg sync.WaitGroup
	total := make(chan int, 4)
	for range 4 {
		q, err := timers.New(pool, timers.Config{Name: "test", Table: "test_timers", Key: []string{"id"}, Batch: 50,
			Fire: func(ctx context.Context, tm timers.Timer) (bool, error) {
				mu.Lock()
				fired[tm.Key[0]]++
				mu.Unlock()
				_, err := pool.Exec(ctx, `DELETE FROM test_timers WHERE id = $1`, tm.Key[0])
				return true, err
			}})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			sum := 0
			for {
				n, err := q.FireDue(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if n == 0 {
					break
				}
				sum += n
			}
			total <- sum
		})
	}
	wg.Wait()
	close(total)
	sum := 0
	for n := range total {
		sum += n
	}
	if sum != 300 || len(fired) != 300 {
		t.Fatalf("fired %d timers (%d distinct), want 300", sum, len(fired))
	}
	for id, k := range fired {
		if k != 1 {
			t.Errorf("timer %s fired %d times", id, k)
		}
	}
}

// TestLeaseOutlivesDeadClaimer: a row claimed by a process that died
// before firing it is due again, to anyone, once the lease is over, and
// not before.
func TestLeaseOutlivesDeadClaimer(t *testing.T) {
	ctx := context.Background()
	pool := setup(t)
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	clk := &clock{now: start}
	if _, err := pool.Exec(ctx, `INSERT INTO test_timers (id, due_at) VALUES ('a', $1)`, start); err != nil {
		t.Fatal(err)
	}
	tries := 0
	cfg := timers.Config{Name: "test", Table: "test_timers", Key: []string{"id"}, Now: clk.Now, Lease: time.Minute,
		Fire: func(ctx context.Context, tm timers.Timer) (bool, error) {
			tries++
			_, err := pool.Exec(ctx, `DELETE FROM test_timers WHERE id = $1`, tm.Key[0])
			return true, err
		}}
	dead := cfg
	dead.Fire = func(ctx context.Context, tm timers.Timer) (bool, error) { panic("dies") }
	dq, err := timers.New(pool, dead)
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() { _ = recover() }()
		_, _ = dq.FireDue(ctx)
	}()
	q, err := timers.New(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute - time.Millisecond)
	if n, err := q.FireDue(ctx); err != nil || n != 0 {
		t.Fatalf("within the lease: fired %d (%v), want 0", n, err)
	}
	clk.Add(time.Millisecond)
	if n, err := q.FireDue(ctx); err != nil || n != 1 || tries != 1 {
		t.Fatalf("after the lease: fired %d (%v), want 1", n, err)
	}
}
