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
	"google.golang.org/protobuf/proto"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/migrate"
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
