package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/envelope"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/projections/orderdetail"
	"github.com/keel-commerce/keel/projections/orderhistory"
	"github.com/keel-commerce/keel/projections/readmodel"
)

// orderLife is one order's events, in order: OrderPlaced with 1–4 lines,
// then confirmed, paid and (two in three) shipped; or cancelled (one in
// five); or left pending (one in ten). About 3.07 events per order. The
// same mix as projections/readmodel's rebuild-equals-live test.
func orderLife(rnd *rand.Rand, id string, placed time.Time) []proto.Message {
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(placed.Add(d)) }
	eur := func(v int64) *typesv1.Money { return &typesv1.Money{AmountMinor: v, Currency: "EUR"} }
	var lines []*ordersv1.OrderLine
	var total int64
	for l := range 1 + rnd.IntN(4) {
		q, price := int64(1+rnd.IntN(3)), int64(100+rnd.IntN(5000))
		lines = append(lines, &ordersv1.OrderLine{Sku: fmt.Sprintf("SKU-%04d", (l*31+rnd.IntN(1000))%1000), Name: "Thing",
			Quantity: q, UnitPrice: eur(price), LineTotal: eur(q * price)})
		total += q * price
	}
	msgs := []proto.Message{&ordersv1.OrderPlaced{OrderId: id, CheckoutId: "co-" + id, CartId: "cart-" + id,
		Customer: &typesv1.Customer{CustomerId: fmt.Sprintf("cust-%d", rnd.IntN(5000)), Email: "c@example.com"},
		Lines:    lines, Totals: &typesv1.Totals{Subtotal: eur(total), Total: eur(total)},
		ShippingAddress: &typesv1.Address{Name: "A", Line1: "1 Main St", City: "Berlin", CountryCode: "DE"}, PlacedAt: ts(0)}}
	switch r := rnd.IntN(10); {
	case r < 2:
		return append(msgs, &ordersv1.OrderCancelled{OrderId: id, Reason: ordersv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK, Detail: "SKU short", CancelledAt: ts(time.Second)})
	case r < 3:
		return msgs // still pending
	}
	msgs = append(msgs, &ordersv1.OrderConfirmed{OrderId: id, ConfirmedAt: ts(time.Second)},
		&ordersv1.OrderPaid{OrderId: id, PaymentId: "pay-" + id, Amount: eur(total), PaidAt: ts(2 * time.Second)})
	if rnd.IntN(3) > 0 {
		msgs = append(msgs, &ordersv1.OrderShipped{OrderId: id, ShipmentId: "sh-" + id, Carrier: "DHL", TrackingNumber: "T" + id, ShippedAt: ts(time.Hour)})
	}
	return msgs
}

func newSeededRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 7)) }

// orderEvent wraps one message of an order's life as the orders service
// would append it: correlated to its checkout, with a traceparent.
func orderEvent(reg *codec.Registry, id string, m proto.Message) (envelope.Event, error) {
	typ, payload, err := reg.Encode(m)
	if err != nil {
		return envelope.Event{}, err
	}
	return envelope.Event{ID: ksuid.New(), Type: typ, Payload: payload, CorrelationID: "co-" + id, CausationID: ksuid.New().String(),
		Metadata: map[string]string{envelope.MetaTraceparent: traceparent()}}, nil
}

const (
	fillWriters    = 4
	fillWindow     = 500  // orders in flight per writer
	fillBatchLimit = 1000 // events per AppendManyTx transaction
)

// fillOrders appends order lives to st until about target events are
// stored. Each of fillWriters writers keeps fillWindow orders in flight
// and appends the next event of randomly chosen ones, so the log
// interleaves streams as a shop's does (an order's events are spread over
// its life, not adjacent); fillBatchLimit events go in one transaction
// (pg.Store.AppendManyTx). It returns the events and orders written.
func fillOrders(ctx context.Context, st *pg.Store, target int, seed uint64) (events, orders int, err error) {
	reg := codec.All()
	type open struct {
		id   string
		msgs []proto.Message
		next int
	}
	type result struct{ events, orders int }
	results := make(chan result, fillWriters)
	errs := make(chan error, fillWriters)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for w := range fillWriters {
		go func() {
			rnd := rand.New(rand.NewPCG(seed, uint64(w)))
			share := target / fillWriters
			var r result
			planned := 0
			newOrder := func() *open {
				id := fmt.Sprintf("b%d-%d-%s", w, r.orders, ksuid.New().String()[20:])
				o := &open{id: id, msgs: orderLife(rnd, id, base.Add(time.Duration(r.orders*fillWriters+w)*3*time.Second))}
				r.orders++
				planned += len(o.msgs)
				return o
			}
			var window []*open
			for len(window) < fillWindow && planned < share {
				window = append(window, newOrder())
			}
			for len(window) > 0 {
				var appends []pg.StreamAppend
				at := map[string]int{} // stream → index in appends
				for n := 0; n < fillBatchLimit && len(window) > 0; n++ {
					i := rnd.IntN(len(window))
					o := window[i]
					ev, err := orderEvent(reg, o.id, o.msgs[o.next])
					if err != nil {
						errs <- err
						return
					}
					stream := "order-" + o.id
					k, ok := at[stream]
					if !ok {
						k = len(appends)
						at[stream] = k
						appends = append(appends, pg.StreamAppend{Stream: stream, Expected: store.Exact(int64(o.next))})
					}
					appends[k].Events = append(appends[k].Events, ev)
					if o.next++; o.next == len(o.msgs) {
						if planned < share {
							window[i] = newOrder()
						} else {
							window[i] = window[len(window)-1]
							window = window[:len(window)-1]
						}
					}
				}
				if err := pgx.BeginFunc(ctx, st.Pool(), func(tx pgx.Tx) error {
					_, err := st.AppendManyTx(ctx, tx, appends)
					return err
				}); err != nil {
					errs <- err
					return
				}
				for _, a := range appends {
					r.events += len(a.Events)
				}
			}
			results <- r
		}()
	}
	for range fillWriters {
		select {
		case r := <-results:
			events += r.events
			orders += r.orders
		case e := <-errs:
			if err == nil {
				err = fmt.Errorf("fill the orders store: %w", e)
			}
		}
	}
	return events, orders, err
}

type rebuildResult struct {
	events, orders  int
	fillPerSec      float64
	readAllPerSec   float64 // ReadAll loop, batches of 5,000 (the rebuild's)
	copyOutPerSec   float64 // COPY (SELECT … FROM events) TO STDOUT
	foldPerSec      float64 // decode + fold into memory, order_history, no I/O
	history, detail rebuildRun
}

type rebuildRun struct {
	perSec float64
	// pass: the main read of the store folded into memory (with setup:
	// the copy's tables, counting the events); flush: writing the copy
	// (every FlushEvery events and at the end, each interval holding a
	// flush also holds one batch's fold); switch: catching up with the
	// tail and switching.
	pass, flush, switchover time.Duration
	// CPU seconds of this process (the fold, the reads' decoding) and of
	// every process on the machine during the rebuild.
	clientCPU, machineCPU float64
}

// selfCPU is this process's user+system CPU time so far, in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// machineCPU is the CPU time the whole machine has spent busy so far
// (/proc/stat: every state but idle and iowait), in seconds.
func machineCPU() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return math.NaN()
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return math.NaN()
	}
	busy := 0.0
	for i, v := range f[1:8] { // user nice system idle iowait irq softirq
		if i == 3 || i == 4 {
			continue
		}
		x, _ := strconv.ParseFloat(v, 64)
		busy += x
	}
	return busy / 100 // USER_HZ
}

// benchRebuild fills a fresh orders store with about cfg.rebuildEvents
// events, measures the read floors on it, then times readmodel.Rebuild of
// order_history and of order_detail into a fresh projections database.
func benchRebuild(ctx context.Context, cfg config, run int) (rebuildResult, error) {
	var res rebuildResult
	pool, done, err := freshDB(ctx, fillWriters+4)
	if err != nil {
		return res, err
	}
	defer done()
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		return res, err
	}
	defer st.Close()
	proj, doneProj, err := freshDB(ctx, 6)
	if err != nil {
		return res, err
	}
	defer doneProj()

	t := time.Now()
	res.events, res.orders, err = fillOrders(ctx, st, cfg.rebuildEvents, uint64(run))
	if err != nil {
		return res, err
	}
	res.fillPerSec = float64(res.events) / time.Since(t).Seconds()
	// Fresh statistics and visibility map, as on a store that has lived.
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE events`); err != nil {
		return res, err
	}

	// Floor 1: the store's own read, as the rebuild reads (ReadAll in
	// batches of 5,000 in (tx_id, global_position) order), rows decoded
	// into envelopes but payloads not.
	var evs []envelope.Event
	t = time.Now()
	var after envelope.Position
	for {
		b, err := st.ReadAll(ctx, after, 5000)
		if err != nil {
			return res, err
		}
		if len(b) == 0 {
			break
		}
		evs = append(evs, b...)
		after = b[len(b)-1].Position
	}
	res.readAllPerSec = float64(len(evs)) / time.Since(t).Seconds()
	if len(evs) != res.events {
		return res, fmt.Errorf("ReadAll returned %d events, %d appended", len(evs), res.events)
	}

	// Floor 2: the same rows in PostgreSQL's bulk format, nothing decoded.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return res, err
	}
	t = time.Now()
	tag, err := conn.Conn().PgConn().CopyTo(ctx, io.Discard, `COPY (SELECT tx_id, global_position, event_id, stream_id, version, type, recorded_at,
correlation_id, causation_id, payload, metadata FROM events ORDER BY tx_id, global_position) TO STDOUT (FORMAT binary)`)
	el := time.Since(t)
	conn.Release()
	if err != nil {
		return res, fmt.Errorf("copy out: %w", err)
	}
	res.copyOutPerSec = float64(tag.RowsAffected()) / el.Seconds()

	// Floor 3: the fold alone, in memory: payload decode + order_history's
	// Apply through the machinery (applied versions), no database.
	reg := codec.All()
	p := orderhistory.New()
	rows := readmodel.Memory()
	t = time.Now()
	for _, e := range evs {
		msg, err := reg.Decode(e.Type, e.Payload)
		if err != nil {
			return res, err
		}
		if err := readmodel.ApplyAll(ctx, p, rows, readmodel.Event{Event: e, Context: "orders", Message: msg}); err != nil {
			return res, err
		}
	}
	res.foldPerSec = float64(len(evs)) / time.Since(t).Seconds()
	evs = nil

	for _, c := range []struct {
		p   readmodel.Projection
		out *rebuildRun
	}{{orderhistory.New(), &res.history}, {orderdetail.New(), &res.detail}} {
		flushEvery := cfg.rebuildFlush
		if flushEvery <= 0 {
			flushEvery = 50_000 // RebuildOptions' default
		}
		// Rebuild flushes right after reporting a batch that takes the
		// unflushed events to flushEvery, so the interval up to the next
		// report holds a flush (plus one batch's fold, read ahead).
		var pass, switching, flushes, last time.Duration
		var pending, prevRead int64
		flushing := false
		cpu0, mach0 := selfCPU(), machineCPU()
		start := time.Now()
		_, err := readmodel.Rebuild(ctx, c.p, readmodel.RebuildOptions{Pool: proj, Stores: map[string]*pg.Store{"orders": st},
			FlushEvery: cfg.rebuildFlush,
			Progress: func(pr readmodel.Progress) {
				switch {
				case pr.Phase == "reading" && switching == 0:
					if flushing {
						flushes += pr.Elapsed - last
					}
					pending += pr.Read - prevRead
					prevRead = pr.Read
					if flushing = pending >= int64(flushEvery); flushing {
						pending = 0
					}
					last, pass = pr.Elapsed, pr.Elapsed
				case pr.Phase == "switching":
					switching = pr.Elapsed
				}
			}})
		total := time.Since(start)
		if err != nil {
			return res, err
		}
		*c.out = rebuildRun{perSec: float64(res.events) / total.Seconds(), pass: pass - flushes, flush: flushes + switching - pass, switchover: total - switching,
			clientCPU: selfCPU() - cpu0, machineCPU: machineCPU() - mach0}
	}
	return res, nil
}
