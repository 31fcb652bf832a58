// Package pg is the PostgreSQL event store: the reference backend of the
// store port, built on pgx/v5.
//
// Appends take a transaction-scoped advisory lock on the stream before they
// write, then check the expected version and insert in the same implicit
// transaction, pipelined in one round trip. The lock is what keeps a
// stream's versions in transaction-id order: a transaction gets its id at
// its first write, which happens only after the previous writer of that
// stream committed, so ordering the log by (tx_id, position) never puts
// version n+1 of a stream before version n.
//
// Readers of the whole log (ReadAll, Subscribe) return only rows whose
// transaction id is below the horizon: the oldest transaction of the
// current snapshot that may still write to this database. Every older
// transaction has ended, so an event that commits late is never skipped:
// the tail waits for it while its transaction runs. A transaction that
// rolls back releases the tail at once.
//
// Transaction ids are server-wide, so the plain snapshot xmin would make a
// long transaction in any database of the server (a test, a report, another
// service) hold every store's tail back. The horizon leaves out the
// snapshot's running transactions that pg_stat_activity shows, at the same
// moment, as still running in another database: a session is bound to its
// database, so they cannot write here. A transaction that ended in between,
// or that the store's role may not see (grant it pg_read_all_stats), is
// kept: the horizon can only be too old, never too new.
//
// After each append the store sends a coalesced NOTIFY (outside the append's
// transaction, where it would serialize commits on PostgreSQL's notify lock,
// and committed without waiting for its WAL flush, see notifySQL), so
// subscribers in any process wake within a round trip instead of polling.
package pg

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/ksuid"

	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/migrate"
	"github.com/keel-commerce/keel/events/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Channel is the LISTEN/NOTIFY channel appends notify on.
const Channel = "keel_events"

// Options tune a Store. The zero value is usable.
type Options struct {
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
	// Registerer receives the store's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// IdlePoll is how often an idle subscriber re-reads without a
	// notification, a safety net for writers that do not notify. Default 1s.
	IdlePoll time.Duration
	// HeldPoll is how often a subscriber re-reads while the tail is held
	// back by a running transaction. Default 2ms. A re-read that finds
	// nothing new while still held doubles the wait, up to HeldPollMax
	// (default 16ms); one that reads events starts again at HeldPoll. A
	// hold by a transaction of this store ends with its NOTIFY anyway; the
	// back-off is for holds from elsewhere on the server (xids are
	// server-wide), which made every subscriber re-read 500 times a second
	// for as long as they lasted.
	HeldPoll, HeldPollMax time.Duration
	// AppendWorkers is how many append groups may be in flight at once
	// (see group.go); default 4.
	AppendWorkers int
}

// Store is the PostgreSQL event store. It is safe for concurrent use; Close
// it to stop its notifier.
type Store struct {
	pool    *pgxpool.Pool
	log     *slog.Logger
	opts    Options
	metrics *metrics
	poke    chan struct{}
	stop    context.CancelFunc
	done    chan struct{}
	groups  *grouper
}

var _ store.Store = (*Store)(nil)

// New migrates the database behind pool to the current schema and returns a
// store on it.
func New(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.IdlePoll <= 0 {
		opts.IdlePoll = time.Second
	}
	if opts.HeldPoll <= 0 {
		opts.HeldPoll = 2 * time.Millisecond
	}
	if opts.HeldPollMax < opts.HeldPoll {
		opts.HeldPollMax = max(16*time.Millisecond, opts.HeldPoll)
	}
	if opts.AppendWorkers <= 0 {
		opts.AppendWorkers = 4
	}
	if err := migrate.Up(ctx, pool, mustSub(migrations, "migrations"), "goose_eventstore_version"); err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	nctx, stop := context.WithCancel(context.Background())
	s := &Store{pool: pool, log: opts.Logger, opts: opts, metrics: m, poke: make(chan struct{}, 1), stop: stop, done: make(chan struct{})}
	go s.notifier(nctx)
	s.startGroups(nctx, opts.AppendWorkers)
	return s, nil
}

// Close stops the notifier and the append groups (appends still queued
// fail). It does not close the pool.
func (s *Store) Close() {
	s.stop()
	<-s.done
	s.groups.workers.Wait()
}

// Pool is the pool the store writes through.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

const selectCols = `tx_id, global_position, event_id, stream_id, version, type, recorded_at, correlation_id, causation_id, payload, metadata`

func scanEvents(rows pgx.Rows, capHint int) ([]envelope.Event, error) {
	defer rows.Close()
	evs := make([]envelope.Event, 0, min(capHint, 1024))
	for rows.Next() {
		var e envelope.Event
		var tx int64
		var id string
		var meta []byte
		if err := rows.Scan(&tx, &e.Position.Global, &id, &e.StreamID, &e.Version, &e.Type, &e.RecordedAt,
			&e.CorrelationID, &e.CausationID, &e.Payload, &meta); err != nil {
			return nil, err
		}
		e.Position.Tx = uint64(tx)
		if err := fillIDMeta(&e, id, meta); err != nil {
			return nil, err
		}
		evs = append(evs, e)
	}
	return evs, rows.Err()
}

// fillIDMeta sets e's id and metadata from their stored forms.
func fillIDMeta(e *envelope.Event, id string, meta []byte) error {
	k, err := ksuid.Parse(id)
	if err != nil {
		return fmt.Errorf("event %q: bad id: %w", id, err)
	}
	e.ID = k
	if len(meta) > 0 {
		if err := json.Unmarshal(meta, &e.Metadata); err != nil {
			return fmt.Errorf("event %s: metadata: %w", id, err)
		}
	}
	return nil
}

func mustSub(fsys embed.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}
