package readmodel_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-commerce/keel/events/consistency"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/projections/orderdetail"
	"github.com/keel-commerce/keel/projections/orderhistory"
	"github.com/keel-commerce/keel/projections/readmodel"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// orderProjections are the projections of the orders context.
func orderProjections() []readmodel.Projection {
	return []readmodel.Projection{orderhistory.New(), orderdetail.New()}
}

// TestRebuildEqualsLive: after a workload, a rebuild from the stores gives
// the live tables row for row (invariant 9). KEEL_REBUILD_ORDERS scales it
// (default 1,000 orders, about 3,000 events; the 100,000-event run
// is `KEEL_REBUILD_ORDERS=35000`).
func TestRebuildEqualsLive(t *testing.T) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("KEEL_REBUILD_ORDERS")); err == nil && v > 0 {
		n = v
	}
	ctx := context.Background()
	h := newHarness(t, "orders")
	ps := orderProjections()
	h.runBuilders(ps...)
	events := h.orderWorkload(ctx, n, 1)
	t.Logf("%d orders, %d events", n, events)
	for _, p := range ps {
		h.waitCaughtUp(p)
		live, err := readmodel.Active(ctx, h.proj, p.Name())
		testenv.Must(t, err, "active copy")
		start := time.Now()
		rebuilt, err := readmodel.Rebuild(ctx, p, readmodel.RebuildOptions{Pool: h.proj, Stores: h.stores(), FlushEvery: events/3 + 1})
		testenv.Must(t, err, "rebuild %s", p.Name())
		t.Logf("%s: rebuilt %d events in %s", p.Name(), events, time.Since(start).Round(time.Millisecond))
		if rebuilt.Number != live.Number+1 || rebuilt.State != "active" {
			t.Fatalf("rebuilt copy %+v, want generation %d active", rebuilt, live.Number+1)
		}
		sameRows(t, p.Name()+" rebuilt vs live", h.dump(live.Schema, p), h.dump(rebuilt.Schema, p))
	}
}

// TestRebuildUnderLiveTraffic: while orders keep coming and queries keep
// running, a rebuild catches up and switches; afterwards the new copy,
// kept up by the live builder, misses nothing: it equals a third copy
// rebuilt once the traffic stopped.
func TestRebuildUnderLiveTraffic(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, "orders")
	p := orderhistory.New()
	h.runBuilders(p)
	h.orderWorkload(ctx, 500, 2)

	// Traffic: orders keep coming, queries keep answering.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var written, queries atomic.Int64
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			written.Add(int64(h.orderWorkload(ctx, 8, uint64(100+i))))
			time.Sleep(20 * time.Millisecond) // a steady trickle, not a flood
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			g, err := readmodel.Active(ctx, h.proj, p.Name())
			if err == nil {
				_, _, err = orderhistory.List(ctx, h.proj, g.Schema, orderhistory.Filter{Status: "paid"}, readmodel.Cursor{}, 20)
			}
			if err != nil {
				t.Errorf("query during rebuild: %v", err)
				return
			}
			queries.Add(1)
		}
	})

	var progress []readmodel.Progress
	g, err := readmodel.Rebuild(ctx, p, readmodel.RebuildOptions{Pool: h.proj, Stores: h.stores(), ReadBatch: 200, FlushEvery: 400,
		Progress: func(pr readmodel.Progress) { progress = append(progress, pr) },
		// More orders between catching up and the switch: the switch's
		// own catch-up must take them.
		BeforeSwitch: func(ctx context.Context) error { h.orderWorkload(ctx, 40, 99); return nil }})
	testenv.Must(t, err, "rebuild under traffic")
	time.Sleep(200 * time.Millisecond) // traffic continues after the switch too
	close(stop)
	wg.Wait()
	t.Logf("rebuilt into %s; %d events written during the test, %d queries answered", g.Schema, written.Load(), queries.Load())
	if queries.Load() == 0 || written.Load() == 0 {
		t.Fatalf("no traffic during the rebuild (queries %d, events %d)", queries.Load(), written.Load())
	}
	if last := progress[len(progress)-1]; last.Phase != "done" || last.Read < last.Total-int64(written.Load()) {
		t.Errorf("last progress %+v", last)
	}

	h.waitCaughtUp(p)
	again, err := readmodel.Rebuild(ctx, p, readmodel.RebuildOptions{Pool: h.proj, Stores: h.stores()})
	testenv.Must(t, err, "second rebuild")
	sameRows(t, "copy switched in under traffic vs rebuilt after", h.dump(again.Schema, p), h.dump(g.Schema, p))
}

// TestRebuildResumes: a rebuild that dies half way continues from its last
// flush, and the result equals a rebuild in one go.
func TestRebuildResumes(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, "orders")
	p := orderdetail.New()
	events := h.orderWorkload(ctx, 600, 3)
	readmodel.EnsureActive(ctx, h.proj, p) //nolint:errcheck // checked by Rebuild below

	dying, cancel := context.WithCancel(ctx)
	var flushes int
	_, err := readmodel.Rebuild(dying, p, readmodel.RebuildOptions{Pool: h.proj, Stores: h.stores(), ReadBatch: 100, FlushEvery: 300,
		Progress: func(pr readmodel.Progress) {
			if pr.Read >= int64(events/2) {
				flushes++
				cancel() // the process dies here
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted rebuild: %v, want context.Canceled", err)
	}
	gens, err := readmodel.Generations(ctx, h.proj)
	testenv.Must(t, err, "generations")
	var building readmodel.Generation
	for _, g := range gens {
		if g.State == "building" {
			building = g
		}
	}
	if building.EventsRead == 0 || building.EventsRead >= int64(events) {
		t.Fatalf("half-built copy read %d of %d events, want some but not all", building.EventsRead, events)
	}
	var resumedFrom int64 = -1
	g, err := readmodel.Rebuild(ctx, p, readmodel.RebuildOptions{Pool: h.proj, Stores: h.stores(), ReadBatch: 100,
		Progress: func(pr readmodel.Progress) {
			if resumedFrom < 0 {
				resumedFrom = pr.Read - pr.Applied
			}
		}})
	testenv.Must(t, err, "resumed rebuild")
	if g.Number != building.Number || resumedFrom != building.EventsRead {
		t.Fatalf("resumed copy %d from %d events, want copy %d from %d", g.Number, resumedFrom, building.Number, building.EventsRead)
	}
	once, err := readmodel.Rebuild(ctx, p, readmodel.RebuildOptions{Pool: h.proj, Stores: h.stores()})
	testenv.Must(t, err, "rebuild in one go")
	sameRows(t, "resumed vs in one go", h.dump(once.Schema, p), h.dump(g.Schema, p))
}

// TestReadYourWrites: a write's token, passed to Wait, always sees the
// write; a token the projection cannot reach in time says how far behind
// it is.
func TestReadYourWrites(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(t, "orders")
	p := orderdetail.New()
	h.runBuilders(p)
	w := readmodel.NewWaiter(h.proj, nil)
	go w.Run(ctx) //nolint:errcheck // ends with ctx

	var lat []time.Duration
	for i := range 40 {
		msgs := orderLife(newRand(uint64(i)), "ryw-"+strconv.Itoa(i), i)
		id := msgs[0].(*ordersv1.OrderPlaced).GetOrderId()
		start := time.Now()
		if !h.appendEvents(ctx, "orders", "order-"+id, 0, time.Now(), msgs...) {
			t.FailNow()
		}
		tok := consistency.New("orders", map[string]int64{"order-" + id: int64(len(msgs))})
		if err := w.Wait(ctx, p, tok, time.Minute); err != nil {
			t.Fatalf("wait for order %s: %v", id, err)
		}
		g, err := readmodel.Active(ctx, h.proj, p.Name())
		testenv.Must(t, err, "active")
		o, ok, err := orderdetail.Get(ctx, h.proj, g.Schema, id)
		testenv.Must(t, err, "get")
		if !ok || len(o.History) != len(msgs) {
			t.Fatalf("after waiting for its token, order %s = %+v (found %v), want its %d events applied", id, o, ok, len(msgs))
		}
		lat = append(lat, time.Since(start))
	}
	t.Logf("write to visible through the token: first %v, last %v", lat[0], lat[len(lat)-1])

	// After a rebuild switched copies, tokens are answered from the new one
	// (the waiter caches the active copy until it hears of the switch).
	if _, err := readmodel.Rebuild(ctx, p, readmodel.RebuildOptions{Pool: h.proj, Stores: h.stores()}); err != nil {
		t.Fatal(err)
	}
	msgs := orderLife(newRand(99), "ryw-after-switch", 99)
	if !h.appendEvents(ctx, "orders", "order-ryw-after-switch", 0, time.Now(), msgs...) {
		t.FailNow()
	}
	if err := w.Wait(ctx, p, consistency.New("orders", map[string]int64{"order-ryw-after-switch": int64(len(msgs))}), time.Minute); err != nil {
		t.Fatalf("wait after the switch: %v", err)
	}
	g, err := readmodel.Active(ctx, h.proj, p.Name())
	testenv.Must(t, err, "active")
	if _, ok, err := orderdetail.Get(ctx, h.proj, g.Schema, "ryw-after-switch"); err != nil || !ok || g.Number != 2 {
		t.Fatalf("after the switch: copy %d, order found %v (%v)", g.Number, ok, err)
	}

	// A version that does not exist yet: the wait ends with how far behind.
	if !h.appendEvents(ctx, "orders", "order-late", 0, time.Now(), &ordersv1.OrderPlaced{OrderId: "late", PlacedAt: timestamppb.Now()}) {
		t.FailNow()
	}
	err = w.Wait(ctx, p, consistency.New("orders", map[string]int64{"order-late": 2}), 300*time.Millisecond)
	var behind *readmodel.BehindError
	if !errors.As(err, &behind) || behind.Streams["order-late"][1] != 2 {
		t.Fatalf("wait for a future version = %v, want BehindError naming order-late at 2", err)
	}
	if err := w.Wait(ctx, p, consistency.New("carts", map[string]int64{"cart-1": 1}), time.Second); !errors.Is(err, readmodel.ErrTokenContext) {
		t.Fatalf("token of another context = %v, want ErrTokenContext", err)
	}
}
