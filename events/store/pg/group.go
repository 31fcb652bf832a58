package pg

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/store"
)

// Group commit. Concurrent Append calls are gathered and written together:
// one implicit transaction, one pipelined round trip (every stream's lock,
// in key order, then each append's checked insert), one WAL flush. Each
// append keeps its own meaning: its version check is in its own statement,
// which sees the group's earlier inserts, so two appends to one stream at
// one version still give one winner and one conflict. An append that
// inserts nothing is resolved after the commit, as a lone append would be.
// If the group fails as a whole (an event id already stored elsewhere
// aborts the transaction), each append is retried alone, so one bad append
// never fails its neighbours.
//
// Locks are all taken before the first insert, in key order: no deadlock
// between groups, and every transaction id is assigned only once the
// group holds its streams (the log-order rule of Lock).

// maxGroup caps the appends of one group.
const maxGroup = 256

type appendReq struct {
	ctx      context.Context
	stream   string
	expected store.ExpectedVersion
	evs      []envelope.Event
	args     []any
	res      store.AppendResult
	err      error
	done     chan struct{}
}

type grouper struct {
	mu      sync.Mutex
	queue   []*appendReq
	wake    chan struct{}
	workers sync.WaitGroup
}

func (s *Store) startGroups(ctx context.Context, n int) {
	s.groups = &grouper{wake: make(chan struct{}, n)}
	for range n {
		s.groups.workers.Add(1)
		go s.groupWorker(ctx)
	}
}

// appendGrouped queues one append for the next group and waits for it.
func (s *Store) appendGrouped(ctx context.Context, stream string, expected store.ExpectedVersion, evs []envelope.Event) (store.AppendResult, error) {
	if err := validate(stream, expected, evs); err != nil {
		return store.AppendResult{}, err
	}
	args, err := appendArgs(stream, expected, evs)
	if err != nil {
		return store.AppendResult{}, err
	}
	r := &appendReq{ctx: ctx, stream: stream, expected: expected, evs: evs, args: args, done: make(chan struct{})}
	g := s.groups
	g.mu.Lock()
	g.queue = append(g.queue, r)
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	select {
	case <-r.done:
		return r.res, r.err
	case <-ctx.Done():
		// The append may still be written; the caller retries with the
		// same event ids, which the store recognises.
		return store.AppendResult{}, ctx.Err()
	}
}

func (s *Store) groupWorker(ctx context.Context) {
	g := s.groups
	defer g.workers.Done()
	for {
		select {
		case <-ctx.Done():
			s.failQueued(ctx.Err())
			return
		case <-g.wake:
		}
		for {
			g.mu.Lock()
			n := min(len(g.queue), maxGroup)
			batch := slices.Clone(g.queue[:n])
			g.queue = g.queue[n:]
			more := len(g.queue) > 0
			g.mu.Unlock()
			if n == 0 {
				break
			}
			if more {
				select { // let another worker take the rest meanwhile
				case g.wake <- struct{}{}:
				default:
				}
			}
			s.runGroup(ctx, batch)
		}
	}
}

func (s *Store) failQueued(err error) {
	g := s.groups
	g.mu.Lock()
	q := g.queue
	g.queue = nil
	g.mu.Unlock()
	for _, r := range q {
		r.err = err
		close(r.done)
	}
}

func (s *Store) runGroup(ctx context.Context, batch []*appendReq) {
	start := time.Now()
	defer func() {
		wrote := false
		for _, r := range batch {
			s.metrics.observe(start, len(r.evs), r.err)
			wrote = wrote || (r.err == nil && !r.res.Duplicate)
		}
		if wrote {
			s.notify()
		}
		for _, r := range batch {
			close(r.done)
		}
	}()
	if len(batch) == 1 {
		r := batch[0]
		r.res, r.err = s.appendVia(r.ctx, s.pool, r.stream, r.expected, r.evs)
		return
	}
	keys := make([]int64, 0, len(batch))
	for _, r := range batch {
		keys = append(keys, streamLock(r.stream))
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)

	b := &pgx.Batch{}
	b.Queue(`SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS t(k, i) ORDER BY i`, keys)
	for _, r := range batch {
		b.Queue(appendSQL, r.args...)
	}
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	br := s.pool.SendBatch(gctx, b)
	_, err := br.Exec()
	inserted := make([]int, len(batch))
	for i, r := range batch {
		if err != nil {
			break
		}
		r.res, inserted[i], err = scanAppend(br)
	}
	err = errors.Join(err, br.Close())
	if err != nil {
		// The whole group rolled back: run each append alone.
		for _, r := range batch {
			r.res, r.err = s.appendVia(r.ctx, s.pool, r.stream, r.expected, r.evs)
		}
		return
	}
	for i, r := range batch {
		switch inserted[i] {
		case len(r.evs):
		case 0:
			r.res, r.err = s.resolveRefused(r.ctx, r.stream, r.expected, r.evs)
		default:
			r.res, r.err = store.AppendResult{}, errors.New("append: partial insert") // cannot happen: one statement
		}
	}
}
