package pg_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/ksuid"

	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/store/storetest"
	"github.com/keel-commerce/keel/events/testenv"
)

// collector records what a subscription delivers.
type collector struct {
	mu   sync.Mutex
	seen map[ksuid.KSUID]int
	last map[string]int64
	errs []string
	n    int
}

func subscribe(t *testing.T, s *pg.Store) *collector {
	t.Helper()
	c := &collector{seen: map[ksuid.KSUID]int{}, last: map[string]int64{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Subscribe(ctx, envelope.Position{}, func(_ context.Context, evs []envelope.Event) error {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, e := range evs {
				c.seen[e.ID]++
				c.n++
				if e.Version != c.last[e.StreamID]+1 {
					c.errs = append(c.errs, fmt.Sprintf("stream %s: version %d after %d", e.StreamID, e.Version, c.last[e.StreamID]))
				}
				c.last[e.StreamID] = e.Version
			}
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func (c *collector) count(ids []ksuid.KSUID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, id := range ids {
		if c.seen[id] > 0 {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds or the deadline passes. The deadline
// is a liveness bound, not a performance target.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *collector) check(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.errs {
		t.Error(e)
	}
	for id, n := range c.seen {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
}

func ids(evs []envelope.Event) []ksuid.KSUID {
	out := make([]ksuid.KSUID, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// TestLateCommit holds a transaction open after it appended while others
// append and commit: the tail must wait for it and then deliver everything
// exactly once; a rolled-back transaction must not stall the tail.
func TestLateCommit(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	sub := subscribe(t, s)

	early := storetest.Events(3)
	if _, err := s.Append(ctx, "early", store.NoStream, early); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "early events", func() bool { return sub.count(ids(early)) == 3 })

	held, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = held.Rollback(ctx) }) // a no-op once it ended; frees the pool on failure
	heldEvs := storetest.Events(1)
	if _, err := s.AppendTx(ctx, held, "held", store.NoStream, heldEvs); err != nil {
		t.Fatal(err)
	}
	var after []envelope.Event
	for i := range 20 {
		evs := storetest.Events(1)
		if _, err := s.Append(ctx, fmt.Sprintf("after-%d", i%4), store.Any, evs); err != nil {
			t.Fatal(err)
		}
		after = append(after, evs...)
	}
	// While the holder runs, nothing that committed after it began writing
	// may be delivered: it would be passed by the held event.
	time.Sleep(300 * time.Millisecond)
	if n := sub.count(ids(after)); n != 0 {
		t.Fatalf("%d events delivered past a running transaction", n)
	}
	if err := held.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	s.Notify()
	waitFor(t, "held and later events", func() bool {
		return sub.count(ids(heldEvs)) == 1 && sub.count(ids(after)) == len(after)
	})

	// A rolled-back transaction releases the tail without any notification.
	doomed, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = doomed.Rollback(ctx) }) // a no-op once it ended; frees the pool on failure
	doomedEvs := storetest.Events(2)
	if _, err := s.AppendTx(ctx, doomed, "doomed", store.NoStream, doomedEvs); err != nil {
		t.Fatal(err)
	}
	var later []envelope.Event
	for range 10 {
		evs := storetest.Events(1)
		if _, err := s.Append(ctx, "later", store.Any, evs); err != nil {
			t.Fatal(err)
		}
		later = append(later, evs...)
	}
	if err := doomed.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "events behind a rolled-back transaction", func() bool { return sub.count(ids(later)) == len(later) })
	if n := sub.count(ids(doomedEvs)); n != 0 {
		t.Fatalf("%d rolled-back events delivered", n)
	}
	sub.check(t)
}

// TestLateCommitStress: writers append in transactions that stay open for
// random times, a fifth of them roll back; the subscriber must see every
// committed event exactly once and every stream in version order.
func TestLateCommitStress(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	sub := subscribe(t, s)
	const writers, each = 8, 60
	var mu sync.Mutex
	var committed []ksuid.KSUID
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range each {
				tx, err := s.Pool().Begin(ctx)
				if err != nil {
					errc <- err
					return
				}
				evs := storetest.Events(1 + r.IntN(3))
				stream := fmt.Sprintf("s-%d", r.IntN(6))
				if _, err := s.AppendTx(ctx, tx, stream, store.Any, evs); err != nil {
					_ = tx.Rollback(ctx)
					errc <- err
					return
				}
				time.Sleep(time.Duration(r.IntN(4000)) * time.Microsecond)
				if i%5 == 4 {
					if err := tx.Rollback(ctx); err != nil {
						errc <- err
						return
					}
					continue
				}
				if err := tx.Commit(ctx); err != nil {
					errc <- err
					return
				}
				s.Notify()
				mu.Lock()
				committed = append(committed, ids(evs)...)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	waitFor(t, "every committed event", func() bool { return sub.count(committed) == len(committed) })
	sub.mu.Lock()
	if sub.n != len(committed) {
		t.Errorf("delivered %d events, committed %d", sub.n, len(committed))
	}
	sub.mu.Unlock()
	sub.check(t)
}

// TestForeignTransactionDoesNotHold: a long transaction in another
// database of the server (which has a transaction id, like every writer)
// does not hold the tail back; one in this database does (TestLateCommit).
func TestForeignTransactionDoesNotHold(t *testing.T) {
	s := newStore(t)
	other := testenv.Pool(t)
	ctx := context.Background()
	sub := subscribe(t, s)

	foreign, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = foreign.Rollback(ctx) })
	var xid int64
	if err := foreign.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	evs := storetest.Events(5)
	if _, err := s.Append(ctx, "after-foreign", store.NoStream, evs); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "events committed while another database's transaction runs", func() bool { return sub.count(ids(evs)) == len(evs) })
	if err := foreign.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	sub.check(t)
}
