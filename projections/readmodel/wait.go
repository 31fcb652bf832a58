package readmodel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/keel-commerce/keel/events/consistency"
)

// Waiter lets queries wait until a projection has applied a command's
// events (read-your-writes). It listens on NotifyChannel, which the live
// builders and switches notify on commit. Per projection one checker runs
// while anyone waits: woken by a notification (or a slow poll that covers
// a lost listener), it reads the applied versions of every waiter's
// streams in one query and releases the waiters it satisfies. So a
// builder's commit costs one query, however many requests wait.
type Waiter struct {
	pool     *pgxpool.Pool
	log      *slog.Logger
	mu       sync.Mutex
	watches  map[string]*watch // by projection
	active   map[string]string // projection → active copy's schema, until a switch
	listened bool              // the listener is connected (else checkers poll faster)
}

// watch is one projection's waiters and its checker.
type watch struct {
	waits   map[*waiting]struct{}
	kick    chan struct{} // buffered 1: wakes the checker
	running bool
}

type waiting struct {
	tok  consistency.Token
	done chan struct{} // closed when the copy has applied tok
}

// switchedSuffix marks the notification of a switch to a new copy.
const switchedSuffix = " switched"

// NewWaiter returns a Waiter on the projections database. Run it.
func NewWaiter(pool *pgxpool.Pool, log *slog.Logger) *Waiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Waiter{pool: pool, log: log, watches: map[string]*watch{}, active: map[string]string{}}
}

// Run listens until ctx ends, reconnecting after errors.
func (w *Waiter) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		err := w.listen(ctx)
		w.setListened(false)
		if ctx.Err() != nil {
			break
		}
		w.log.Warn("readmodel: waiter lost its listener; retrying", "err", err)
		w.forget("") // a switch may have gone unheard
		w.kick("")   // everyone re-checks
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (w *Waiter) setListened(v bool) {
	w.mu.Lock()
	w.listened = v
	w.mu.Unlock()
}

func (w *Waiter) listen(ctx context.Context) error {
	conn, err := w.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		return err
	}
	defer conn.Exec(context.WithoutCancel(ctx), "UNLISTEN "+NotifyChannel) //nolint:errcheck
	w.setListened(true)
	w.kick("") // whatever happened before we listened
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		name, switched := strings.CutSuffix(n.Payload, switchedSuffix)
		if switched {
			w.forget(name)
		}
		w.kick(name)
	}
}

// schema is the projection's active copy, cached until a switch.
func (w *Waiter) schema(ctx context.Context, projection string) (string, error) {
	w.mu.Lock()
	s, ok := w.active[projection]
	w.mu.Unlock()
	if ok {
		return s, nil
	}
	g, err := Active(ctx, w.pool, projection)
	if err != nil {
		return "", err
	}
	w.mu.Lock()
	w.active[projection] = g.Schema
	w.mu.Unlock()
	return g.Schema, nil
}

// forget drops cached copies ("" forgets all).
func (w *Waiter) forget(projection string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if projection == "" {
		clear(w.active)
		return
	}
	delete(w.active, projection)
}

// kick wakes the checker of projection ("" wakes all).
func (w *Waiter) kick(projection string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for p, wt := range w.watches {
		if projection == "" || p == projection {
			select {
			case wt.kick <- struct{}{}:
			default:
			}
		}
	}
}

// ErrTokenContext is returned for a token of a context the projection
// does not read.
var ErrTokenContext = errors.New("readmodel: the consistency token is of a context this read model does not read")

// BehindError says how far a projection is from a token when the wait
// ended.
type BehindError struct {
	Projection string
	Streams    map[string][2]int64 // stream → {applied, wanted}, the ones not reached
	Waited     time.Duration
}

func (e *BehindError) Error() string {
	parts := make([]string, 0, len(e.Streams))
	for s, v := range e.Streams {
		parts = append(parts, fmt.Sprintf("%s at version %d of %d", s, v[0], v[1]))
	}
	sort.Strings(parts)
	return fmt.Sprintf("read model %s has not applied the token's events after %s: %s",
		e.Projection, e.Waited.Round(time.Millisecond), strings.Join(parts, ", "))
}

// Wait returns once projection p has applied every stream of tok up to its
// version, or a *BehindError after max.
func (w *Waiter) Wait(ctx context.Context, p Projection, tok consistency.Token, max time.Duration) error {
	if tok.IsZero() {
		return nil
	}
	if !slices.Contains(p.Sources(), tok.Context) {
		return fmt.Errorf("%w: token of %s, read model %s reads %s", ErrTokenContext, tok.Context, p.Name(), strings.Join(p.Sources(), ", "))
	}
	start := time.Now()
	me := &waiting{tok: tok, done: make(chan struct{})}
	w.register(p.Name(), me)
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	select {
	case <-me.done:
		return nil
	case <-ctx.Done():
		w.unregister(p.Name(), me)
		return ctx.Err()
	case <-deadline.C:
	}
	if !w.unregister(p.Name(), me) {
		return nil // satisfied at the last moment
	}
	missing, err := Missing(ctx, w.pool, p.Name(), tok)
	switch {
	case errors.Is(err, ErrNoActive):
		missing = map[string][2]int64{}
		for s, v := range tok.Streams {
			missing[s] = [2]int64{0, v}
		}
	case err != nil:
		return err
	case len(missing) == 0:
		return nil
	}
	return &BehindError{Projection: p.Name(), Streams: missing, Waited: time.Since(start)}
}

// register adds a waiter and makes sure the projection's checker runs.
func (w *Waiter) register(projection string, me *waiting) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wt := w.watches[projection]
	if wt == nil {
		wt = &watch{waits: map[*waiting]struct{}{}, kick: make(chan struct{}, 1)}
		w.watches[projection] = wt
	}
	wt.waits[me] = struct{}{}
	select {
	case wt.kick <- struct{}{}:
	default:
	}
	if !wt.running {
		wt.running = true
		go w.check(projection, wt)
	}
}

// unregister removes a waiter; false if the checker released it already.
func (w *Waiter) unregister(projection string, me *waiting) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	wt := w.watches[projection]
	if wt == nil {
		return false
	}
	_, ok := wt.waits[me]
	delete(wt.waits, me)
	return ok
}

// check runs while projection has waiters: on each kick (or poll), one
// query for all their streams, then it releases those satisfied.
func (w *Waiter) check(projection string, wt *watch) {
	ctx := context.Background()
	for {
		w.mu.Lock()
		if len(wt.waits) == 0 {
			wt.running = false
			w.mu.Unlock()
			return
		}
		set := map[string]bool{}
		for me := range wt.waits {
			for s := range me.tok.Streams {
				set[s] = true
			}
		}
		poll := time.Second
		if !w.listened {
			poll = 100 * time.Millisecond
		}
		w.mu.Unlock()
		streams := make([]string, 0, len(set))
		for s := range set {
			streams = append(streams, s)
		}

		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		have, err := w.applied(qctx, projection, streams)
		cancel()
		if err != nil {
			if !errors.Is(err, ErrNoActive) {
				w.log.Warn("readmodel: waiter check failed", "projection", projection, "err", err)
			}
			w.forget(projection) // the cached copy may be gone
		} else {
			w.mu.Lock()
			for me := range wt.waits {
				if satisfied(me.tok, have) {
					close(me.done)
					delete(wt.waits, me)
				}
			}
			w.mu.Unlock()
		}
		select {
		case <-wt.kick:
		case <-time.After(poll):
		}
	}
}

// applied reads the active copy's versions of streams.
func (w *Waiter) applied(ctx context.Context, projection string, streams []string) (map[string]int64, error) {
	schema, err := w.schema(ctx, projection)
	if err != nil {
		return nil, err
	}
	return appliedVersions(ctx, w.pool, schema, streams)
}

func satisfied(tok consistency.Token, have map[string]int64) bool {
	for s, v := range tok.Streams {
		if have[s] < v {
			return false
		}
	}
	return true
}

// Missing returns the token's streams the projection's active copy has not
// applied up to the token's version: stream → {applied, wanted}.
func Missing(ctx context.Context, q Querier, projection string, tok consistency.Token) (map[string][2]int64, error) {
	g, err := Active(ctx, q, projection)
	if err != nil {
		return nil, err
	}
	streams := make([]string, 0, len(tok.Streams))
	for s := range tok.Streams {
		streams = append(streams, s)
	}
	have, err := appliedVersions(ctx, q, g.Schema, streams)
	if err != nil {
		return nil, err
	}
	missing := map[string][2]int64{}
	for s, want := range tok.Streams {
		if have[s] < want {
			missing[s] = [2]int64{have[s], want}
		}
	}
	return missing, nil
}

func appliedVersions(ctx context.Context, q Querier, schema string, streams []string) (map[string]int64, error) {
	rows, err := q.Query(ctx, `SELECT stream_id, version FROM `+appliedStreams.qualified(schema)+` WHERE stream_id = ANY($1)`, streams)
	if err != nil {
		return nil, err
	}
	have := map[string]int64{}
	var s string
	var v int64
	if _, err := pgx.ForEachRow(rows, []any{&s, &v}, func() error { have[s] = v; return nil }); err != nil {
		return nil, err
	}
	return have, nil
}
