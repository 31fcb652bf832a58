package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keel-commerce/keel/events/envelope"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
)

const eventType = "keel.stock.v1.StockReserved"

// payloads are protobuf-encoded StockReserved messages, padded through
// their string fields to ~200 bytes, precomputed so the bench client spends
// its (shared) CPU on appending, not encoding.
var payloads = func() [][]byte {
	out := make([][]byte, 256)
	for i := range out {
		now := time.Now()
		m := &stockv1.StockReserved{
			ReservationId: ksuid.New().String(),
			Sku:           fmt.Sprintf("SKU-%06d-BLUE-XL-COTTON-ORGANIC-2026-SPRING", i),
			WarehouseId:   fmt.Sprintf("WH-EU-CENTRAL-%03d", i%17),
			Quantity:      int64(1 + i%5),
			OrderId:       ksuid.New().String(),
			CheckoutId:    ksuid.New().String(),
			ExpiresAt:     timestamppb.New(now.Add(15 * time.Minute)),
			ReservedAt:    timestamppb.New(now),
		}
		b, err := proto.Marshal(m)
		if err != nil {
			panic(err)
		}
		out[i] = b
	}
	return out
}()

func traceparent() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-01"
}

// newEvents returns n events of one command: same correlation id, caused by
// the same command, each with its own traceparent.
func newEvents(n int, seq int) []envelope.Event {
	corr, cause := ksuid.New().String(), ksuid.New().String()
	evs := make([]envelope.Event, n)
	for i := range evs {
		evs[i] = envelope.Event{
			ID:            ksuid.New(),
			Type:          eventType,
			CorrelationID: corr,
			CausationID:   cause,
			Payload:       payloads[(seq+i)%len(payloads)],
			Metadata:      map[string]string{envelope.MetaTraceparent: traceparent()},
		}
	}
	return evs
}

// closedLoop runs writers goroutines, each calling op back to back, for
// warm+dur; only calls that start after the warm-up and end within the
// measured window count. op returns how many rows/events it wrote.
type loopResult struct {
	ops, items int64
	window     time.Duration
	lats       []time.Duration // sorted
}

func closedLoop(ctx context.Context, writers int, warm, dur time.Duration, op func(ctx context.Context, w, i int) (int, error)) (loopResult, error) {
	start := time.Now()
	from, to := start.Add(warm), start.Add(warm+dur)
	var mu sync.Mutex
	var res loopResult
	var firstErr error
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lats := make([]time.Duration, 0, 4096)
			var items int64
			for i := 0; ; i++ {
				t0 := time.Now()
				if !t0.Before(to) || ctx.Err() != nil {
					break
				}
				n, err := op(ctx, w, i)
				t1 := time.Now()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("writer %d: %w", w, err)
					}
					mu.Unlock()
					return
				}
				if !t0.Before(from) && !t1.After(to) {
					lats = append(lats, t1.Sub(t0))
					items += int64(n)
				}
			}
			mu.Lock()
			res.lats = append(res.lats, lats...)
			res.items += items
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return res, firstErr
	}
	res.ops = int64(len(res.lats))
	res.window = dur
	slices.Sort(res.lats)
	return res, nil
}

func (r loopResult) perSec() float64 { return float64(r.items) / r.window.Seconds() }

// benchBaseline measures plain INSERT+COMMIT (autocommit) into a minimal
// table: rowsPer rows per INSERT, writers connections each held by one
// goroutine for the whole run.
func benchBaseline(ctx context.Context, cfg config, writers, rowsPer int) (loopResult, error) {
	pool, done, err := freshDB(ctx, int32(writers))
	if err != nil {
		return loopResult{}, err
	}
	defer done()
	if _, err := pool.Exec(ctx, `CREATE TABLE bench_baseline (id bigserial PRIMARY KEY, payload bytea NOT NULL)`); err != nil {
		return loopResult{}, err
	}
	conns := make([]*pgxpool.Conn, writers)
	for i := range conns {
		if conns[i], err = pool.Acquire(ctx); err != nil {
			return loopResult{}, err
		}
		defer conns[i].Release()
	}
	if rowsPer == 1 {
		return closedLoop(ctx, writers, cfg.warm, cfg.duration, func(ctx context.Context, w, i int) (int, error) {
			_, err := conns[w].Exec(ctx, `INSERT INTO bench_baseline (payload) VALUES ($1)`, payloads[i%len(payloads)])
			return 1, err
		})
	}
	batches := make([][][]byte, len(payloads))
	for i := range batches {
		for j := range rowsPer {
			batches[i] = append(batches[i], payloads[(i+j)%len(payloads)])
		}
	}
	return closedLoop(ctx, writers, cfg.warm, cfg.duration, func(ctx context.Context, w, i int) (int, error) {
		_, err := conns[w].Exec(ctx, `INSERT INTO bench_baseline (payload) SELECT unnest($1::bytea[])`, batches[i%len(batches)])
		return rowsPer, err
	})
}

// streamsPerWriter is how many streams each writer round-robins over.
const streamsPerWriter = 100

// benchAppend measures pg.Store.Append with perCall events per call.
// Each writer owns streamsPerWriter streams and appends with an exact
// expected version it tracks itself (no conflicts: no other writer touches
// its streams).
func benchAppend(ctx context.Context, cfg config, writers, perCall int) (loopResult, error) {
	// The store appends through the pool it is given: one connection per
	// writer plus headroom for its NOTIFY sender.
	pool, done, err := freshDB(ctx, int32(writers+4))
	if err != nil {
		return loopResult{}, err
	}
	defer done()
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		return loopResult{}, err
	}
	defer st.Close()
	versions := make([][]int64, writers)
	for w := range versions {
		versions[w] = make([]int64, streamsPerWriter)
	}
	return closedLoop(ctx, writers, cfg.warm, cfg.duration, func(ctx context.Context, w, i int) (int, error) {
		s := i % streamsPerWriter
		stream := fmt.Sprintf("stock-bench-w%02d-%03d", w, s)
		res, err := st.Append(ctx, stream, store.Exact(versions[w][s]), newEvents(perCall, i))
		if err != nil {
			return 0, err
		}
		versions[w][s] = res.Version
		return perCall, nil
	})
}
