// Package command runs commands against event-sourced aggregates stored in
// the PostgreSQL event store: load → decide → append, once per command id.
//
// # One writer per stream, in batches
//
// A command locks its streams before it reads them (pg.Store.Lock), so its
// decision can never be stale and a hot aggregate never collapses into a
// storm of optimistic-concurrency conflicts and retries. Locking alone would
// cap a hot stream at one commit (one WAL flush) per command, so commands
// queue up in this process and a few workers run them in batches: one
// transaction takes the queued commands of many streams at once (a hot
// stream's whole queue, or one command each of many quiet streams), locks
// all their streams, reads their new events in one query, decides each
// command in arrival order against the state the previous ones left,
// appends to every stream in one pipelined round trip and commits once.
// Throughput on a hot stream, and across many streams, then grows with load
// instead of collapsing. A stream's commands are in one batch at a time, in
// arrival order. Across replicas the
// lock still serializes correctly; routing a stream's commands to one
// replica (Kafka partitioning by key) keeps the batches large.
//
// # Exactly once per command id
//
// The outcome of each command, accepted (with the response to give) or
// rejected by the domain (with its code and detail), is stored in the same
// transaction as its events, with the command's Fingerprint (kind, target,
// input). A command id seen again with the same fingerprint returns that
// stored outcome and changes nothing, however often and from wherever (HTTP
// retry, Kafka redelivery) it arrives; with another fingerprint it is
// refused (a *Rejection with code CodeIDReused wrapping *IDReused, which
// names the first command), changes nothing and is not stored.
//
// # State cache
//
// Folded state is cached per stream with its version; a command reads only
// the events after it (under the lock, so it is never stale, even with other
// replicas writing). A failed transaction drops the cached entries it used.
package command

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/migrate"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
)

//go:embed migrations/*.sql
var migrations embed.FS

// ErrInvalidCommand reports a command without id, streams or decision.
var ErrInvalidCommand = errors.New("invalid command")

// ErrClosed reports a command sent after Close.
var ErrClosed = errors.New("command handler closed")

// Rejection is a command the domain refused (out of stock, illegal
// transition). It is stored like an accepted command, so a retry gets the
// same refusal. Code is a stable machine-readable reason.
type Rejection struct {
	Code   string
	Detail string
	err    error // the domain error, on the first execution only
}

func (r *Rejection) Error() string { return r.Code + ": " + r.Detail }

// Unwrap returns the domain error (nil when the rejection was replayed).
func (r *Rejection) Unwrap() error { return r.err }

// Reject marks a domain error as a refusal of the command, with a stable code.
func Reject(code string, err error) error {
	return &Rejection{Code: code, Detail: err.Error(), err: err}
}

// IsRejection reports whether err is (or wraps) a *Rejection.
func IsRejection(err error) bool {
	var r *Rejection
	return errors.As(err, &r)
}

// Aggregate tells the handler how to rebuild a stream's state.
type Aggregate[S any] struct {
	// New returns the state of a stream without events.
	New func(stream string) S
	// Apply folds one event into state and returns the result. It may
	// modify state in place; it must not fail (events are facts).
	Apply func(state S, event proto.Message) S
}

// Decision is what a command decided: events per stream and the response
// to give the caller (replayed verbatim to retries).
type Decision struct {
	Events   map[string][]proto.Message
	Response []byte
	// Writes, when set, writes rows that must commit with the events (a
	// lookup table, a timer) in the command's transaction. It runs after
	// the events are appended; an error fails the command without storing
	// anything. It must be idempotent within one transaction.
	Writes func(ctx context.Context, tx pgx.Tx) error
	// Statements are rows to write with the events, like Writes, but
	// pipelined: every statement of a batch's commands goes to the
	// database in one round trip with the command records. Prefer them on
	// hot paths; a failing statement fails the batch (then each command
	// runs alone).
	Statements []Statement
}

// Statement is one SQL statement with its arguments.
type Statement struct {
	SQL  string
	Args []any
}

// Command is one request to change aggregates.
type Command[S any] struct {
	// ID identifies the command; the handler decides each id once.
	ID string
	// Fingerprint is what the command is, less its id: the same id with
	// another fingerprint is refused (IDReused). Kind is required, Input
	// should be the command as asked; Target defaults to Streams.
	Fingerprint   Fingerprint
	CorrelationID string
	Metadata      map[string]string
	// Streams are the aggregates the decision reads; it may append only to them.
	Streams []string
	// Decide returns the decision from the current state of Streams. It
	// must not modify the states. A domain refusal is returned as Reject(...).
	Decide func(states map[string]S) (Decision, error)
}

// Result is the outcome of an accepted command.
type Result struct {
	Response []byte
	// Position is at or after the command's last event.
	Position envelope.Position
	// Streams are the versions the command's streams had after it (or,
	// for a replayed command, now): at or after its events, the stuff of
	// a read-your-writes token (see package consistency). Streams without
	// events are left out.
	Streams map[string]int64
	// Replayed is true when the command id had been decided before.
	Replayed bool
}

// Options tune a Handler; the zero value is usable.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Name labels the handler's metrics (e.g. "stock"); default "default".
	Name string
	// MaxBatch caps commands per transaction; default 256.
	MaxBatch int
	// Workers is how many transactions run at once; default 4.
	Workers int
	// CacheSize caps cached stream states; default 100,000.
	CacheSize int
	// Timeout bounds one transaction; default 30s. A command run alone
	// after its batch failed gets a Timeout of its own.
	Timeout time.Duration
}

// Handler executes commands for one aggregate type. Safe for concurrent use.
type Handler[S any] struct {
	st       *pg.Store
	reg      *codec.Registry
	agg      Aggregate[S]
	opts     Options
	m        *metrics
	mu       sync.Mutex
	lanes    map[string]*lane[S] // lanes with queued or running commands
	ready    []*lane[S]          // lanes with queued commands and no worker
	closed   bool
	accepted sync.WaitGroup // commands accepted and not yet answered
	wake     chan struct{}
	stop     chan struct{}
	workers  sync.WaitGroup
	cache    *cache[S]
}

// Close refuses new commands, waits until the commands already accepted
// are decided and stored (or failed), and stops the workers.
func (h *Handler[S]) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	h.mu.Unlock()
	h.accepted.Wait()
	close(h.stop)
	h.workers.Wait()
}

// New applies the handler's migrations to the store's database.
func New[S any](ctx context.Context, st *pg.Store, reg *codec.Registry, agg Aggregate[S], opts Options) (*Handler[S], error) {
	if agg.New == nil || agg.Apply == nil || reg == nil || st == nil {
		return nil, errors.New("command handler: store, registry, New and Apply are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Name == "" {
		opts.Name = "default"
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = 100_000
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	if err := migrate.Up(ctx, st.Pool(), sub, "goose_commands_version"); err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Registerer, opts.Name)
	if err != nil {
		return nil, err
	}
	h := &Handler[S]{st: st, reg: reg, agg: agg, opts: opts, m: m,
		lanes: map[string]*lane[S]{}, cache: newCache[S](opts.CacheSize),
		wake: make(chan struct{}, opts.Workers), stop: make(chan struct{})}
	for range opts.Workers {
		h.workers.Add(1)
		go h.work()
	}
	return h, nil
}

// lane queues the commands of one set of streams. A lane is in at most one
// worker's batch at a time, which keeps its commands in arrival order.
type lane[S any] struct {
	key     string
	streams []string
	queue   []*pending[S]
	busy    bool // in a worker's batch
	queued  bool // in Handler.ready
}

type pending[S any] struct {
	cmd     Command[S]
	streams []string // the command's own, sorted
	digest  []byte   // of cmd.Fingerprint
	res     Result
	err     error
	done    chan struct{}
}

// Execute decides cmd once. It returns the stored outcome when cmd.ID was
// decided before (Replayed), a *Rejection when the domain refused it, and
// another error when it could not be decided (then nothing was stored and
// the caller may retry with the same id).
func (h *Handler[S]) Execute(ctx context.Context, cmd Command[S]) (Result, error) {
	if cmd.ID == "" || len(cmd.Streams) == 0 || cmd.Decide == nil || cmd.Fingerprint.Kind == "" {
		return Result{}, fmt.Errorf("%w: needs an id, streams, a decision and a fingerprint's kind", ErrInvalidCommand)
	}
	streams := slices.Clone(cmd.Streams)
	slices.Sort(streams)
	streams = slices.Compact(streams)
	key := strings.Join(streams, "\x00")
	digest, err := cmd.Fingerprint.digest(streams)
	if err != nil {
		return Result{}, err
	}
	p := &pending[S]{cmd: cmd, streams: streams, digest: digest, done: make(chan struct{})}

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return Result{}, ErrClosed
	}
	l, ok := h.lanes[key]
	if !ok {
		l = &lane[S]{key: key, streams: streams}
		h.lanes[key] = l
	}
	l.queue = append(l.queue, p)
	h.accepted.Add(1)
	if !l.busy && !l.queued {
		l.queued = true
		h.ready = append(h.ready, l)
	}
	h.mu.Unlock()
	h.signal()

	// The batch runs on a context of its own: one caller giving up must not
	// fail the others' commands.
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

func (h *Handler[S]) signal() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *Handler[S]) work() {
	defer h.workers.Done()
	for {
		select {
		case <-h.stop:
			return
		case <-h.wake:
		}
		for {
			lanes, batch := h.take()
			if len(batch) == 0 {
				break
			}
			h.run(lanes, batch)
			h.finish(lanes, batch)
		}
	}
}

// take claims ready lanes and their queued commands, up to MaxBatch.
func (h *Handler[S]) take() ([]*lane[S], []*pending[S]) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var lanes []*lane[S]
	var batch []*pending[S]
	for len(h.ready) > 0 && len(batch) < h.opts.MaxBatch {
		l := h.ready[0]
		h.ready = h.ready[1:]
		l.queued, l.busy = false, true
		n := min(len(l.queue), h.opts.MaxBatch-len(batch))
		batch = append(batch, l.queue[:n]...)
		l.queue = l.queue[n:]
		lanes = append(lanes, l)
	}
	if len(h.ready) > 0 {
		h.signal() // more work than one batch: wake another worker
	}
	return lanes, batch
}

// finish releases the lanes, requeues those with more commands, and answers
// the batch's callers.
func (h *Handler[S]) finish(lanes []*lane[S], batch []*pending[S]) {
	h.mu.Lock()
	for _, l := range lanes {
		l.busy = false
		switch {
		case len(l.queue) > 0 && !l.queued:
			l.queued = true
			h.ready = append(h.ready, l)
		case len(l.queue) == 0:
			delete(h.lanes, l.key)
		}
	}
	more := len(h.ready) > 0
	h.mu.Unlock()
	if more {
		h.signal()
	}
	for _, p := range batch {
		close(p.done)
		h.accepted.Done()
	}
}

func (h *Handler[S]) run(lanes []*lane[S], batch []*pending[S]) {
	var streams []string
	for _, l := range lanes {
		streams = append(streams, l.streams...)
	}
	slices.Sort(streams)
	streams = slices.Compact(streams)
	err := h.runBounded(streams, batch)
	if err == nil {
		return
	}
	if len(batch) == 1 {
		batch[0].err = err
		return
	}
	// One command's unexpected failure (not a rejection) must not fail its
	// neighbours: run each alone, each with a deadline of its own (a batch
	// that failed by running out of time has spent the one it had).
	h.m.batchFallbacks.Inc()
	for _, p := range batch {
		if e := h.runBounded(p.streams, []*pending[S]{p}); e != nil {
			p.err = e
		}
	}
}

// runBounded runs one transaction of batch within Options.Timeout.
func (h *Handler[S]) runBounded(streams []string, batch []*pending[S]) error {
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.Timeout)
	defer cancel()
	return h.runBatch(ctx, streams, batch)
}

type stored struct {
	outcome, code, detail string
	response              []byte
	pos                   envelope.Position
	kind, target          string
	fingerprint           []byte // nil for commands stored before fingerprints
}

// reusedBy returns the refusal of p when its id was stored for another
// command, else nil.
func (r stored) reusedBy(id string, digest []byte) *Rejection {
	if r.fingerprint == nil || bytes.Equal(r.fingerprint, digest) {
		return nil
	}
	return (&IDReused{ID: id, Kind: r.kind, Target: r.target}).rejection()
}

// runBatch decides and stores batch in one transaction. On error nothing
// is stored and no pending result is set.
func (h *Handler[S]) runBatch(ctx context.Context, streams []string, batch []*pending[S]) (err error) {
	start := time.Now()
	for _, p := range batch {
		p.res, p.err = Result{}, nil
	}
	tx, err := h.st.Pool().Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			h.cache.drop(streams)
		}
	}()
	if err := h.st.Lock(ctx, tx, streams...); err != nil {
		return err
	}
	done, err := loadProcessed(ctx, tx, batch)
	if err != nil {
		return err
	}
	states, versions, err := h.load(ctx, tx, streams)
	if err != nil {
		return err
	}

	type outcome struct {
		p      *pending[S]
		rec    stored
		rej    *Rejection // the domain's own refusal, first time only
		reused *Rejection // the id names another command: not stored
		events int        // events this command appended
		writes func(context.Context, pgx.Tx) error
		stmts  []Statement
	}
	outs := make([]outcome, 0, len(batch))
	appends := map[string][]envelope.Event{}
	decided := map[string]*outcome{}
	for _, p := range batch {
		if prev, ok := done[p.cmd.ID]; ok {
			outs = append(outs, outcome{p: p, rec: prev, reused: prev.reusedBy(p.cmd.ID, p.digest)})
			continue
		}
		if prev, ok := decided[p.cmd.ID]; ok { // the same id twice in one batch
			outs = append(outs, outcome{p: p, rec: prev.rec, reused: prev.rec.reusedBy(p.cmd.ID, p.digest)})
			continue
		}
		fp := p.cmd.Fingerprint
		o := outcome{p: p, rec: stored{kind: fp.Kind, target: fp.target(p.streams), fingerprint: p.digest}}
		dec, derr := p.cmd.Decide(states)
		var rej *Rejection
		switch {
		case errors.As(derr, &rej):
			o.rec.outcome, o.rec.code, o.rec.detail = "rejected", rej.Code, rej.Detail
			o.rej = rej
		case derr != nil:
			// Not a domain refusal: a bug or bad input the domain did not
			// name. Nothing is stored; the caller sees the error.
			p.err = derr
			continue
		default:
			evs, err := h.toEvents(p.cmd, dec, streams)
			if err != nil {
				p.err = err
				continue
			}
			for s, list := range evs {
				for _, msg := range dec.Events[s] {
					states[s] = h.agg.Apply(states[s], msg)
				}
				appends[s] = append(appends[s], list...)
				o.events += len(list)
			}
			o.rec.outcome, o.rec.response = "accepted", dec.Response
			o.writes = dec.Writes
			o.stmts = dec.Statements
		}
		outs = append(outs, o)
		decided[p.cmd.ID] = &outs[len(outs)-1]
	}

	var last envelope.Position
	var many []pg.StreamAppend
	for _, s := range streams {
		if evs := appends[s]; len(evs) > 0 {
			many = append(many, pg.StreamAppend{Stream: s, Expected: store.Exact(versions[s]), Events: evs})
		}
	}
	if len(many) > 0 {
		results, err := h.st.AppendManyTx(ctx, tx, many)
		if err != nil {
			return err
		}
		for i, res := range results {
			versions[many[i].Stream] = res.Version
			if last.Less(res.Last) {
				last = res.Last
			}
		}
	}
	for i := range outs {
		o := &outs[i]
		if w := o.writes; w != nil {
			if err := w(ctx, tx); err != nil {
				return fmt.Errorf("command %s: writes: %w", o.p.cmd.ID, err)
			}
		}
	}
	var ids, outcomes, codes, details, kinds, targets []string
	var responses, fingerprints [][]byte
	for i := range outs {
		o := &outs[i]
		if _, replay := done[o.p.cmd.ID]; replay || decided[o.p.cmd.ID] != o {
			continue
		}
		if o.events > 0 {
			o.rec.pos = last
		}
		ids = append(ids, o.p.cmd.ID)
		outcomes = append(outcomes, o.rec.outcome)
		codes, details = append(codes, o.rec.code), append(details, o.rec.detail)
		responses = append(responses, o.rec.response)
		kinds, targets = append(kinds, o.rec.kind), append(targets, o.rec.target)
		fingerprints = append(fingerprints, o.rec.fingerprint)
	}
	// The commands' statements and their records, in one round trip.
	b := &pgx.Batch{}
	for i := range outs {
		for _, st := range outs[i].stmts {
			b.Queue(st.SQL, st.Args...)
		}
	}
	if len(ids) > 0 {
		b.Queue(`
INSERT INTO processed_commands (command_id, outcome, response, reject_code, reject_detail, tx_id, position, kind, target, fingerprint)
SELECT id, outcome, response, code, detail, $6, $7, kind, target, fingerprint
FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $8::text[], $9::text[], $10::bytea[])
  AS t(id, outcome, response, code, detail, kind, target, fingerprint)`,
			ids, outcomes, responses, codes, details, int64(last.Tx), last.Global, kinds, targets, fingerprints)
	}
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("record commands: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	committed = true
	for _, s := range streams {
		h.cache.put(s, states[s], versions[s])
	}
	if len(appends) > 0 {
		h.st.Notify()
	}
	h.m.batchSize.Observe(float64(len(batch)))
	h.m.batchSeconds.Observe(time.Since(start).Seconds())
	for i := range outs {
		o := &outs[i]
		_, replay := done[o.p.cmd.ID]
		replay = replay || decided[o.p.cmd.ID] != o
		if o.reused != nil {
			o.p.res, o.p.err = Result{}, o.reused
			h.m.commands.WithLabelValues("reused", "true").Inc()
			continue
		}
		o.p.res, o.p.err = o.rec.result(replay)
		if !replay && o.rej != nil {
			o.p.err = o.rej
		}
		if o.p.err == nil {
			o.p.res.Streams = make(map[string]int64, len(o.p.cmd.Streams))
			for _, s := range o.p.cmd.Streams {
				if v := versions[s]; v > 0 {
					o.p.res.Streams[s] = v
				}
			}
		}
		h.m.commands.WithLabelValues(o.rec.outcome, fmt.Sprint(replay)).Inc()
	}
	return nil
}

func (r stored) result(replayed bool) (Result, error) {
	if r.outcome == "rejected" {
		return Result{Replayed: replayed}, &Rejection{Code: r.code, Detail: r.detail}
	}
	return Result{Response: r.response, Position: r.pos, Replayed: replayed}, nil
}

func loadProcessed[S any](ctx context.Context, tx pgx.Tx, batch []*pending[S]) (map[string]stored, error) {
	ids := make([]string, len(batch))
	for i, p := range batch {
		ids[i] = p.cmd.ID
	}
	rows, err := tx.Query(ctx, `SELECT command_id, outcome, response, reject_code, reject_detail, tx_id, position,
  kind, target, fingerprint
FROM processed_commands WHERE command_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("load processed commands: %w", err)
	}
	defer rows.Close()
	out := map[string]stored{}
	for rows.Next() {
		var id string
		var r stored
		var txid int64
		if err := rows.Scan(&id, &r.outcome, &r.response, &r.code, &r.detail, &txid, &r.pos.Global,
			&r.kind, &r.target, &r.fingerprint); err != nil {
			return nil, fmt.Errorf("load processed commands: %w", err)
		}
		r.pos.Tx = uint64(txid)
		out[id] = r
	}
	return out, rows.Err()
}

// load returns each stream's state and version: the cached state brought
// up to date with the events after it, or a fold of the whole stream, all
// read in one query.
func (h *Handler[S]) load(ctx context.Context, tx pgx.Tx, streams []string) (map[string]S, map[string]int64, error) {
	states := make(map[string]S, len(streams))
	versions := make(map[string]int64, len(streams))
	from := make(map[string]int64, len(streams))
	for _, s := range streams {
		state, version, ok := h.cache.get(s)
		if !ok {
			state, version = h.agg.New(s), 0
		}
		states[s], versions[s], from[s] = state, version, version+1
	}
	newer, err := h.st.ReadStreamsTx(ctx, tx, from)
	if err != nil {
		return nil, nil, err
	}
	for s, evs := range newer {
		for _, e := range evs {
			msg, err := h.reg.Decode(e.Type, e.Payload)
			if err != nil {
				return nil, nil, fmt.Errorf("load %s version %d: %w", s, e.Version, err)
			}
			states[s] = h.agg.Apply(states[s], msg)
			versions[s] = e.Version
		}
	}
	return states, versions, nil
}

func (h *Handler[S]) toEvents(cmd Command[S], dec Decision, streams []string) (map[string][]envelope.Event, error) {
	out := make(map[string][]envelope.Event, len(dec.Events))
	for s, msgs := range dec.Events {
		if _, ok := slices.BinarySearch(streams, s); !ok {
			return nil, fmt.Errorf("%w: command %s decided events for stream %q it did not load", ErrInvalidCommand, cmd.ID, s)
		}
		for _, m := range msgs {
			typ, payload, err := h.reg.Encode(m)
			if err != nil {
				return nil, fmt.Errorf("command %s: %w", cmd.ID, err)
			}
			out[s] = append(out[s], envelope.Event{ID: ksuid.New(), Type: typ, Payload: payload,
				CorrelationID: cmd.CorrelationID, CausationID: cmd.ID, Metadata: cmd.Metadata})
		}
	}
	return out, nil
}

// cache keeps folded states; when full it forgets an arbitrary entry
// (map iteration order), which is cheap and good enough for hot keys that
// come straight back.
type cache[S any] struct {
	mu  sync.Mutex
	max int
	m   map[string]cached[S]
}

type cached[S any] struct {
	state   S
	version int64
}

func newCache[S any](n int) *cache[S] { return &cache[S]{max: n, m: map[string]cached[S]{}} }

func (c *cache[S]) get(stream string) (S, int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[stream]
	if ok {
		// Taken out while in use: Apply may modify it in place, and a
		// failed transaction must not leave a half-applied state behind.
		delete(c.m, stream)
	}
	return e.state, e.version, ok
}

func (c *cache[S]) put(stream string, s S, v int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[stream] = cached[S]{s, v}
}

func (c *cache[S]) drop(streams []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range streams {
		delete(c.m, s)
	}
}

type metrics struct {
	commands       *prometheus.CounterVec
	batchSize      prometheus.Histogram
	batchSeconds   prometheus.Histogram
	batchFallbacks prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, name string) (*metrics, error) {
	l := prometheus.Labels{"handler": name}
	m := &metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keel_commands_total",
			Help: "Commands decided, by outcome (accepted, rejected; reused: the id named another command) and whether the id was seen before.", ConstLabels: l},
			[]string{"outcome", "replayed"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "keel_command_batch_size",
			Help: "Commands per transaction.", ConstLabels: l, Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "keel_command_batch_seconds",
			Help: "Time to lock, load, decide, append and commit a batch.", ConstLabels: l,
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		batchFallbacks: prometheus.NewCounter(prometheus.CounterOpts{Name: "keel_command_batch_fallbacks_total",
			Help: "Batches that failed and were re-run command by command.", ConstLabels: l}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.commands, m.batchSize, m.batchSeconds, m.batchFallbacks} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("command metrics: %w", err)
			}
		}
	}
	return m, nil
}
