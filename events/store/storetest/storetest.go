// Package storetest is the conformance suite of the event-store port. Every
// backend runs it from its own tests:
//
//	func TestConformance(t *testing.T) { storetest.Run(t, newStore) }
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/ksuid"

	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/store"
)

// Factory returns an empty store for one test; the backend cleans it up.
type Factory func(t *testing.T) store.Store

// Run runs every conformance test against stores made by newStore.
func Run(t *testing.T, newStore Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"AppendNewStream", testAppendNewStream},
		{"ExpectedVersions", testExpectedVersions},
		{"IdempotentRetry", testIdempotentRetry},
		{"InvalidAppends", testInvalidAppends},
		{"AtomicAppend", testAtomicAppend},
		{"ReadStream", testReadStream},
		{"ReadAllInBatches", testReadAllInBatches},
		{"SubscribeCatchUpThenLive", testSubscribe},
		{"ConcurrentAppendRace", testConcurrentAppendRace},
		{"ConcurrentStreamsKeepOrder", testConcurrentStreamsKeepOrder},
		{"Head", testHead},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

// Events returns n new events of a test type with distinct payloads.
func Events(n int) []envelope.Event {
	evs := make([]envelope.Event, n)
	for i := range evs {
		evs[i] = envelope.Event{
			ID:            ksuid.New(),
			Type:          "keel.test.v1.Happened",
			Payload:       []byte(fmt.Sprintf("payload-%d", i)),
			CorrelationID: "corr-1",
			CausationID:   "cause-1",
			Metadata:      map[string]string{envelope.MetaTraceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		}
	}
	return evs
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func mustAppend(t *testing.T, s store.Store, stream string, exp store.ExpectedVersion, evs []envelope.Event) store.AppendResult {
	t.Helper()
	res, err := s.Append(ctx(t), stream, exp, evs)
	if err != nil {
		t.Fatalf("append %d events to %s at %s: %v", len(evs), stream, exp, err)
	}
	return res
}

func readStream(t *testing.T, s store.Store, stream string) []envelope.Event {
	t.Helper()
	evs, err := s.ReadStream(ctx(t), stream, 1, 100000)
	if err != nil {
		t.Fatalf("read %s: %v", stream, err)
	}
	return evs
}

func testAppendNewStream(t *testing.T, s store.Store) {
	in := Events(3)
	before := time.Now().Add(-time.Minute)
	res := mustAppend(t, s, "order-1", store.NoStream, in)
	if res.Version != 3 || res.Duplicate {
		t.Fatalf("result = %+v, want version 3, not duplicate", res)
	}
	got := readStream(t, s, "order-1")
	if len(got) != 3 {
		t.Fatalf("read %d events, want 3", len(got))
	}
	var prev envelope.Position
	for i, e := range got {
		w := in[i]
		if e.ID != w.ID || e.Type != w.Type || string(e.Payload) != string(w.Payload) ||
			e.CorrelationID != w.CorrelationID || e.CausationID != w.CausationID ||
			e.Metadata[envelope.MetaTraceparent] != w.Metadata[envelope.MetaTraceparent] {
			t.Errorf("event %d = %+v, want the appended %+v", i, e, w)
		}
		if e.StreamID != "order-1" || e.Version != int64(i+1) {
			t.Errorf("event %d: stream %q version %d", i, e.StreamID, e.Version)
		}
		if e.RecordedAt.Before(before) || e.RecordedAt.After(time.Now().Add(time.Minute)) {
			t.Errorf("event %d: recorded at %v", i, e.RecordedAt)
		}
		if !prev.Less(e.Position) {
			t.Errorf("event %d: position %v not after %v", i, e.Position, prev)
		}
		prev = e.Position
	}
	if res.Last != got[2].Position {
		t.Errorf("result last position %v, want %v", res.Last, got[2].Position)
	}
}

func testExpectedVersions(t *testing.T, s store.Store) {
	mustAppend(t, s, "s", store.NoStream, Events(2))
	cases := []struct {
		name     string
		expected store.ExpectedVersion
		ok       bool
		version  int64
	}{
		{"no stream on existing", store.NoStream, false, 2},
		{"exact stale", store.Exact(1), false, 2},
		{"exact ahead", store.Exact(5), false, 2},
		{"exact current", store.Exact(2), true, 3},
		{"any", store.Any, true, 4},
	}
	for _, c := range cases {
		res, err := s.Append(ctx(t), "s", c.expected, Events(1))
		if c.ok {
			if err != nil || res.Version != c.version {
				t.Errorf("%s: got %+v, %v; want version %d", c.name, res, err, c.version)
			}
			continue
		}
		var ce *store.ConflictError
		if !errors.As(err, &ce) || !store.IsConflict(err) {
			t.Errorf("%s: err = %v, want *ConflictError", c.name, err)
			continue
		}
		if ce.Actual != c.version || ce.Stream != "s" || ce.Expected != c.expected {
			t.Errorf("%s: conflict %+v, want actual %d", c.name, ce, c.version)
		}
	}
	if _, err := s.Append(ctx(t), "fresh", store.Exact(1), Events(1)); !store.IsConflict(err) {
		t.Errorf("exact 1 on a missing stream: err = %v, want conflict", err)
	}
	if res := mustAppend(t, s, "fresh-any", store.Any, Events(2)); res.Version != 2 {
		t.Errorf("any on a missing stream: version %d, want 2", res.Version)
	}
}

func testIdempotentRetry(t *testing.T, s store.Store) {
	first := Events(2)
	res1 := mustAppend(t, s, "s", store.NoStream, first)
	res2 := mustAppend(t, s, "s", store.NoStream, first)
	if !res2.Duplicate || res2.Version != res1.Version || res2.Last != res1.Last {
		t.Fatalf("retry = %+v, want duplicate of %+v", res2, res1)
	}
	if n := len(readStream(t, s, "s")); n != 2 {
		t.Fatalf("stream has %d events after a retry, want 2", n)
	}
	// The retry is recognised under Any too.
	if res := mustAppend(t, s, "s", store.Any, first); !res.Duplicate {
		t.Errorf("retry under any = %+v, want duplicate", res)
	}
	// Different events at the same expected version conflict.
	if _, err := s.Append(ctx(t), "s", store.NoStream, Events(2)); !store.IsConflict(err) {
		t.Errorf("other events at the same version: err = %v, want conflict", err)
	}
	// A retry of an earlier append after later ones still succeeds.
	second := Events(1)
	mustAppend(t, s, "s", store.Exact(2), second)
	if res := mustAppend(t, s, "s", store.NoStream, first); !res.Duplicate || res.Version != 2 {
		t.Errorf("late retry = %+v, want duplicate at version 2", res)
	}
	// The same ids in another stream are refused, not silently dropped.
	if _, err := s.Append(ctx(t), "other", store.NoStream, first); err == nil {
		t.Errorf("reusing event ids in another stream succeeded")
	}
	if n := len(readStream(t, s, "s")); n != 3 {
		t.Fatalf("stream has %d events, want 3", n)
	}
}

func testInvalidAppends(t *testing.T, s store.Store) {
	noID := Events(1)
	noID[0].ID = ksuid.Nil
	noType := Events(1)
	noType[0].Type = ""
	twice := Events(1)
	twice = append(twice, twice[0])
	for name, c := range map[string]struct {
		stream string
		exp    store.ExpectedVersion
		evs    []envelope.Event
	}{
		"no events":       {"s", store.Any, nil},
		"no stream id":    {"", store.Any, Events(1)},
		"no event id":     {"s", store.Any, noID},
		"no type":         {"s", store.Any, noType},
		"id twice":        {"s", store.Any, twice},
		"bad expectation": {"s", store.ExpectedVersion(-7), Events(1)},
	} {
		if _, err := s.Append(ctx(t), c.stream, c.exp, c.evs); !errors.Is(err, store.ErrInvalidAppend) {
			t.Errorf("%s: err = %v, want ErrInvalidAppend", name, err)
		}
	}
	if n := len(readStream(t, s, "s")); n != 0 {
		t.Errorf("invalid appends stored %d events", n)
	}
}

func testAtomicAppend(t *testing.T, s store.Store) {
	taken := Events(1)
	mustAppend(t, s, "a", store.NoStream, taken)
	batch := Events(3)
	batch[1].ID = taken[0].ID // the middle event reuses an id: nothing may land
	if _, err := s.Append(ctx(t), "b", store.NoStream, batch); err == nil {
		t.Fatal("append with a reused id succeeded")
	}
	if n := len(readStream(t, s, "b")); n != 0 {
		t.Fatalf("failed append left %d events", n)
	}
}

func testReadStream(t *testing.T, s store.Store) {
	mustAppend(t, s, "s", store.NoStream, Events(10))
	mustAppend(t, s, "other", store.NoStream, Events(3))
	got, err := s.ReadStream(ctx(t), "s", 4, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Version != 4 || got[2].Version != 6 {
		t.Fatalf("read from 4 limit 3: %d events, versions %v", len(got), versions(got))
	}
	if got := readStream(t, s, "missing"); len(got) != 0 {
		t.Fatalf("missing stream read %d events", len(got))
	}
}

func testReadAllInBatches(t *testing.T, s store.Store) {
	want := map[ksuid.KSUID]bool{}
	for i := range 7 {
		evs := Events(i + 1)
		for _, e := range evs {
			want[e.ID] = true
		}
		mustAppend(t, s, fmt.Sprintf("s-%d", i%3), store.Any, evs)
	}
	var pos envelope.Position
	seen := map[ksuid.KSUID]bool{}
	for len(seen) < len(want) {
		evs := readAll(t, s, pos, 4)
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			if !pos.Less(e.Position) {
				t.Fatalf("position %v not after %v", e.Position, pos)
			}
			if seen[e.ID] {
				t.Fatalf("event %s read twice", e.ID)
			}
			seen[e.ID] = true
			pos = e.Position
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("read %d events, want %d", len(seen), len(want))
	}
}

func testSubscribe(t *testing.T, s store.Store) {
	mustAppend(t, s, "s", store.NoStream, Events(5))
	c, cancel := context.WithCancel(ctx(t))
	got := make(chan envelope.Event, 100)
	errc := make(chan error, 1)
	go func() {
		errc <- s.Subscribe(c, envelope.Position{}, func(_ context.Context, evs []envelope.Event) error {
			for _, e := range evs {
				got <- e
			}
			return nil
		})
	}()
	recv := func(n int) []envelope.Event {
		t.Helper()
		var out []envelope.Event
		for range n {
			select {
			case e := <-got:
				out = append(out, e)
			case <-time.After(10 * time.Second):
				t.Fatalf("subscription delivered %d of %d events", len(out), n)
			}
		}
		return out
	}
	if h := recv(5); h[4].Version != 5 {
		t.Fatalf("history ends at version %d", h[4].Version)
	}
	for i := range 3 {
		mustAppend(t, s, "s", store.Exact(int64(5+i)), Events(1))
		if live := recv(1); live[0].Version != int64(6+i) {
			t.Fatalf("live event has version %d, want %d", live[0].Version, 6+i)
		}
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("subscribe returned %v after cancel, want context.Canceled", err)
	}
	select {
	case e := <-got:
		t.Fatalf("unexpected extra event %+v", e)
	default:
	}
	// A handler error ends the subscription with that error.
	boom := errors.New("boom")
	err := s.Subscribe(ctx(t), envelope.Position{}, func(context.Context, []envelope.Event) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("subscribe returned %v, want the handler's error", err)
	}
}

// testConcurrentAppendRace races 50 appenders at one expected version:
// exactly one wins and the stream's versions stay contiguous.
func testConcurrentAppendRace(t *testing.T, s store.Store) {
	mustAppend(t, s, "hot", store.NoStream, Events(1))
	const n = 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	var other []error
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := s.Append(ctx(t), "hot", store.Exact(1), Events(2))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case store.IsConflict(err):
				conflicts++
			default:
				other = append(other, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if wins != 1 || conflicts != n-1 || len(other) > 0 {
		t.Fatalf("%d wins, %d conflicts, other errors %v; want 1 and %d", wins, conflicts, other, n-1)
	}
	got := readStream(t, s, "hot")
	if v := versions(got); len(v) != 3 || v[0] != 1 || v[1] != 2 || v[2] != 3 {
		t.Fatalf("versions %v, want [1 2 3]", v)
	}
}

// testConcurrentStreamsKeepOrder has writers race on a few streams with
// Any; reading the whole log must show every stream's versions in order.
func testConcurrentStreamsKeepOrder(t *testing.T, s store.Store) {
	const writers, each, streams = 16, 40, 4
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := s.Append(ctx(t), fmt.Sprintf("s-%d", (w+i)%streams), store.Any, Events(1+i%3)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	last := map[string]int64{}
	var pos envelope.Position
	total := 0
	want := 0
	for i := range each {
		want += writers * (1 + i%3)
	}
	for total < want {
		evs := readAll(t, s, pos, 500)
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			if e.Version != last[e.StreamID]+1 {
				t.Fatalf("stream %s: version %d after %d in the log order", e.StreamID, e.Version, last[e.StreamID])
			}
			last[e.StreamID] = e.Version
			total++
		}
		pos = evs[len(evs)-1].Position
	}
	if evs, err := s.ReadAll(ctx(t), pos, 500); err != nil || len(evs) != 0 {
		t.Fatalf("log has %d events beyond the %d appended", len(evs), want)
	}
	if total != want {
		t.Fatalf("log has %d events, want %d", total, want)
	}
}

func testHead(t *testing.T, s store.Store) {
	if p, at, err := s.Head(ctx(t)); err != nil || !p.IsZero() || !at.IsZero() {
		t.Fatalf("empty head = %v %v %v", p, at, err)
	}
	res := mustAppend(t, s, "s", store.NoStream, Events(3))
	p, at, err := s.Head(ctx(t))
	if err != nil || p != res.Last || at.IsZero() {
		t.Fatalf("head = %v %v %v, want %v", p, at, err, res.Last)
	}
}

// readAll reads one batch after pos, waiting while the batch is empty: a
// store may hold its tail back while any older transaction runs (even one
// of another test on the same server), so an empty read is not the end.
// After the deadline it returns the empty batch.
func readAll(t *testing.T, s store.Store, pos envelope.Position, limit int) []envelope.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, err := s.ReadAll(ctx(t), pos, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > limit {
			t.Fatalf("batch of %d, limit %d", len(evs), limit)
		}
		if len(evs) > 0 || time.Now().After(deadline) {
			return evs
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func versions(evs []envelope.Event) []int64 {
	v := make([]int64, len(evs))
	for i, e := range evs {
		v[i] = e.Version
	}
	return v
}
