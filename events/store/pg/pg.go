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
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

const lockSQL = `SELECT pg_advisory_xact_lock($1)`

// appendSQL inserts the events if the stream's version matches. $3 is the
// expected version: -1 any, 0 no stream, n exact.
const appendSQL = `
INSERT INTO events (event_id, stream_id, version, type, correlation_id, causation_id, payload, metadata)
SELECT e.event_id, $1, cur.v + e.ord, e.type, e.correlation_id, e.causation_id, e.payload, e.metadata
FROM (SELECT coalesce(max(version), 0) AS v FROM events WHERE stream_id = $1) cur,
     unnest($2::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::jsonb[])
         WITH ORDINALITY AS e(event_id, type, correlation_id, causation_id, payload, metadata, ord)
WHERE $3::bigint = -1 OR cur.v = $3::bigint
RETURNING tx_id, global_position, version, recorded_at`

// Append implements store.Store.
func (s *Store) Append(ctx context.Context, stream string, expected store.ExpectedVersion, evs []envelope.Event) (store.AppendResult, error) {
	return s.appendGrouped(ctx, stream, expected, evs)
}

// AppendTx appends within the caller's transaction, so a command handler can
// store its events together with other rows (an idempotency record, an
// outbox entry). The stream stays locked until tx ends; subscribers are
// notified only for appends through Append, so call Notify after commit.
// If tx writes anything before its first AppendTx, take the streams' locks
// with Lock before that write (see Lock).
func (s *Store) AppendTx(ctx context.Context, tx pgx.Tx, stream string, expected store.ExpectedVersion, evs []envelope.Event) (store.AppendResult, error) {
	start := time.Now()
	res, err := s.appendVia(ctx, tx, stream, expected, evs)
	s.metrics.observe(start, len(evs), err)
	return res, err
}

// Lock takes the append locks of streams in tx (sorted, so two
// transactions locking overlapping sets cannot deadlock), held until tx
// ends. A command handler locks before it reads, so its decision cannot go
// stale: one writer per stream at a time, no conflicts to retry. Lock must
// come before tx's first write: the log's stream order relies on a
// transaction getting its id only once it holds the stream.
func (s *Store) Lock(ctx context.Context, tx pgx.Tx, streams ...string) error {
	keys := make([]int64, 0, len(streams))
	for _, st := range streams {
		keys = append(keys, streamLock(st))
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS t(k, i) ORDER BY i`, keys); err != nil {
		return fmt.Errorf("lock streams %v: %w", streams, err)
	}
	return nil
}

// ReadStreamTx is ReadStream inside tx (which sees its own appends).
func (s *Store) ReadStreamTx(ctx context.Context, tx pgx.Tx, stream string, from int64, limit int) ([]envelope.Event, error) {
	return readStream(ctx, tx, stream, from, limit)
}

// StreamAppend is one stream's part of AppendManyTx.
type StreamAppend struct {
	Stream   string
	Expected store.ExpectedVersion
	Events   []envelope.Event
}

// AppendManyTx appends to several streams in tx, pipelined in one round
// trip (each stream locked, checked and inserted as Append does). Any
// conflict fails the whole call; tx is then unusable and must roll back.
// The same ordering rule as AppendTx applies: take the locks before tx's
// first write.
func (s *Store) AppendManyTx(ctx context.Context, tx pgx.Tx, appends []StreamAppend) ([]store.AppendResult, error) {
	start := time.Now()
	b := &pgx.Batch{}
	total := 0
	for _, a := range appends {
		if err := validate(a.Stream, a.Expected, a.Events); err != nil {
			return nil, err
		}
		args, err := appendArgs(a.Stream, a.Expected, a.Events)
		if err != nil {
			return nil, err
		}
		b.Queue(lockSQL, streamLock(a.Stream))
		b.Queue(appendSQL, args...)
		total += len(a.Events)
	}
	br := tx.SendBatch(ctx, b)
	out := make([]store.AppendResult, len(appends))
	var err error
	for i, a := range appends {
		if _, err = br.Exec(); err != nil {
			break
		}
		var n int
		if out[i], n, err = scanAppend(br); err != nil {
			break
		}
		if n != len(a.Events) {
			err = &store.ConflictError{Stream: a.Stream, Expected: a.Expected, Actual: -1}
			break
		}
	}
	err = errors.Join(err, br.Close())
	s.metrics.observe(start, total, err)
	if err != nil {
		return nil, fmt.Errorf("append to %d streams: %w", len(appends), err)
	}
	return out, nil
}

// ReadStreamsTx reads several streams in tx in one query: for each stream
// the events with version ≥ from[stream], in version order.
func (s *Store) ReadStreamsTx(ctx context.Context, tx pgx.Tx, from map[string]int64) (map[string][]envelope.Event, error) {
	names := make([]string, 0, len(from))
	versions := make([]int64, 0, len(from))
	for st, v := range from {
		names, versions = append(names, st), append(versions, v)
	}
	rows, err := tx.Query(ctx, `SELECT `+selectCols+` FROM events e
JOIN unnest($1::text[], $2::bigint[]) AS f(stream, v) ON e.stream_id = f.stream AND e.version >= f.v
ORDER BY e.stream_id, e.version`, names, versions)
	if err != nil {
		return nil, fmt.Errorf("read %d streams: %w", len(from), err)
	}
	evs, err := scanEvents(rows, 64)
	if err != nil {
		return nil, fmt.Errorf("read %d streams: %w", len(from), err)
	}
	out := make(map[string][]envelope.Event, len(from))
	for _, e := range evs {
		out[e.StreamID] = append(out[e.StreamID], e)
	}
	return out, nil
}

// Notify wakes subscribers (coalesced, asynchronous). Append calls it itself.
func (s *Store) Notify() { s.notify() }

type batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

func (s *Store) appendVia(ctx context.Context, db batcher, stream string, expected store.ExpectedVersion, evs []envelope.Event) (store.AppendResult, error) {
	if err := validate(stream, expected, evs); err != nil {
		return store.AppendResult{}, err
	}
	args, err := appendArgs(stream, expected, evs)
	if err != nil {
		return store.AppendResult{}, err
	}
	n := len(evs)
	// Lock and insert in one pipelined round trip. Outside an explicit
	// transaction the batch runs as one implicit transaction.
	b := &pgx.Batch{}
	b.Queue(lockSQL, streamLock(stream))
	b.Queue(appendSQL, args...)
	br := db.SendBatch(ctx, b)
	var res store.AppendResult
	rowsSeen := 0
	_, lockErr := br.Exec()
	var qErr error
	if lockErr == nil {
		res, rowsSeen, qErr = scanAppend(br)
	}
	closeErr := br.Close()
	switch err := errors.Join(lockErr, qErr, closeErr); {
	case err == nil && rowsSeen == n:
		return res, nil
	case err == nil && rowsSeen == 0:
		// The version check refused the insert: a conflict, or a retry of
		// an append that already landed.
		return s.resolveRefused(ctx, stream, expected, evs)
	case isUniqueViolation(err):
		// A concurrent writer without our lock, or event ids already stored.
		return s.resolveRefused(ctx, stream, expected, evs)
	case err == nil:
		return store.AppendResult{}, fmt.Errorf("append to %s: inserted %d of %d events", stream, rowsSeen, n)
	default:
		return store.AppendResult{}, fmt.Errorf("append to %s: %w", stream, err)
	}
}

// resolveRefused decides what a refused append was: the exact retry of an
// append already stored (success, nothing written), or a conflict.
func (s *Store) resolveRefused(ctx context.Context, stream string, expected store.ExpectedVersion, evs []envelope.Event) (store.AppendResult, error) {
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID.String()
	}
	rows, err := s.pool.Query(ctx, `SELECT event_id, stream_id, version, tx_id, global_position FROM events WHERE event_id = ANY($1)`, ids)
	if err != nil {
		return store.AppendResult{}, fmt.Errorf("append to %s: look up event ids: %w", stream, err)
	}
	type stored struct {
		stream  string
		version int64
		pos     envelope.Position
	}
	found := map[string]stored{}
	for rows.Next() {
		var id string
		var st stored
		var tx int64
		if err := rows.Scan(&id, &st.stream, &st.version, &tx, &st.pos.Global); err != nil {
			rows.Close()
			return store.AppendResult{}, fmt.Errorf("append to %s: look up event ids: %w", stream, err)
		}
		st.pos.Tx = uint64(tx)
		found[id] = st
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return store.AppendResult{}, fmt.Errorf("append to %s: look up event ids: %w", stream, err)
	}

	if len(found) == len(evs) {
		first := found[ids[0]]
		dup := first.stream == stream && (expected == store.Any || first.version == int64(expected)+1)
		for i, id := range ids {
			st := found[id]
			dup = dup && st.stream == stream && st.version == first.version+int64(i)
		}
		if dup {
			last := found[ids[len(ids)-1]]
			return store.AppendResult{Version: last.version, Last: last.pos, Duplicate: true}, nil
		}
	}
	for _, id := range ids {
		if st, ok := found[id]; ok && st.stream != stream {
			return store.AppendResult{}, fmt.Errorf("%w: event %s is already stored in stream %q", store.ErrInvalidAppend, id, st.stream)
		}
	}
	var actual int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1`, stream).Scan(&actual); err != nil {
		return store.AppendResult{}, fmt.Errorf("append to %s: read version: %w", stream, err)
	}
	s.metrics.conflicts.Inc()
	return store.AppendResult{}, &store.ConflictError{Stream: stream, Expected: expected, Actual: actual}
}

// appendArgs are appendSQL's arguments for evs.
func appendArgs(stream string, expected store.ExpectedVersion, evs []envelope.Event) ([]any, error) {
	n := len(evs)
	ids, types := make([]string, n), make([]string, n)
	corr, caus := make([]string, n), make([]string, n)
	payloads, metas := make([][]byte, n), make([][]byte, n)
	for i, e := range evs {
		ids[i], types[i], corr[i], caus[i] = e.ID.String(), e.Type, e.CorrelationID, e.CausationID
		payloads[i] = e.Payload
		if payloads[i] == nil {
			payloads[i] = []byte{}
		}
		if len(e.Metadata) > 0 {
			b, err := json.Marshal(e.Metadata)
			if err != nil {
				return nil, fmt.Errorf("append to %s: metadata: %w", stream, err)
			}
			metas[i] = b
		}
	}
	return []any{stream, ids, int64(expected), types, corr, caus, payloads, metas}, nil
}

// scanAppend reads appendSQL's RETURNING rows: the result and how many
// events were inserted.
func scanAppend(br pgx.BatchResults) (store.AppendResult, int, error) {
	var res store.AppendResult
	rows, err := br.Query()
	if err != nil {
		return res, 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var tx, pos, ver int64
		var at time.Time
		if err := rows.Scan(&tx, &pos, &ver, &at); err != nil {
			return res, n, err
		}
		n++
		if ver > res.Version {
			res.Version = ver
			res.Last = envelope.Position{Tx: uint64(tx), Global: pos}
		}
	}
	return res, n, rows.Err()
}

func validate(stream string, expected store.ExpectedVersion, evs []envelope.Event) error {
	switch {
	case stream == "":
		return fmt.Errorf("%w: empty stream id", store.ErrInvalidAppend)
	case len(evs) == 0:
		return fmt.Errorf("%w: no events for stream %q", store.ErrInvalidAppend, stream)
	case expected < store.Any:
		return fmt.Errorf("%w: expected version %d", store.ErrInvalidAppend, int64(expected))
	}
	seen := make(map[ksuid.KSUID]bool, len(evs))
	for i, e := range evs {
		switch {
		case e.ID.IsNil():
			return fmt.Errorf("%w: event %d of stream %q has no id", store.ErrInvalidAppend, i, stream)
		case e.Type == "":
			return fmt.Errorf("%w: event %s has no type", store.ErrInvalidAppend, e.ID)
		case seen[e.ID]:
			return fmt.Errorf("%w: event %s appears twice", store.ErrInvalidAppend, e.ID)
		}
		seen[e.ID] = true
	}
	return nil
}

// streamLock maps a stream id to its advisory-lock key. Two streams may share
// a key; that only serializes their appends, it never breaks them.
func streamLock(stream string) int64 {
	h := fnv.New64a()
	h.Write([]byte(stream))
	return int64(h.Sum64())
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

const selectCols = `tx_id, global_position, event_id, stream_id, version, type, recorded_at, correlation_id, causation_id, payload, metadata`

// ReadStream implements store.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, from int64, limit int) ([]envelope.Event, error) {
	return readStream(ctx, s.pool, stream, from, limit)
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func readStream(ctx context.Context, q querier, stream string, from int64, limit int) ([]envelope.Event, error) {
	rows, err := q.Query(ctx, `SELECT `+selectCols+` FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3`, stream, from, limit)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", stream, err)
	}
	evs, err := scanEvents(rows, limit)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", stream, err)
	}
	return evs, nil
}

// visibleSQL selects committed events after ($1,$2) whose transactions
// are older than the horizon h (at most $3); heldBackSQL says whether any
// visible event lies beyond it (the tail is held back by a running
// transaction), which tells a subscriber to look again soon. Both follow
// horizonSQL: readAllSQL and heldSQL run one each, tailSQL both.
const (
	visibleSQL = `SELECT ` + selectCols + ` FROM events, h
  WHERE (tx_id, global_position) > ($1, $2) AND tx_id < h.xmin
  ORDER BY tx_id, global_position
  LIMIT $3`
	heldBackSQL = `SELECT EXISTS (SELECT 1 FROM events, h WHERE tx_id >= h.xmin AND (tx_id, global_position) > ($1, $2))`

	readAllSQL = horizonSQL + "\n" + visibleSQL
	heldSQL    = horizonSQL + "\n" + heldBackSQL
)

// horizonSQL defines h.xmin, the horizon of the package comment: the
// snapshot's xmax, or its oldest running transaction not seen running in
// another database (backend_xid is 32 bits: matched on the low 32 bits of
// the snapshot's 64-bit ids, which lie within 2^31 of each other).
const horizonSQL = `
WITH snap AS (SELECT pg_current_snapshot() AS s),
elsewhere AS (
  SELECT backend_xid::text::bigint AS xid FROM pg_stat_activity
  WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database()),
h AS (
  SELECT LEAST(pg_snapshot_xmax(snap.s)::text::bigint,
    (SELECT min(x::text::bigint) FROM pg_snapshot_xip(snap.s) AS x
     WHERE x::text::bigint % 4294967296 NOT IN (SELECT xid FROM elsewhere))) AS xmin
  FROM snap)`

// tailSQL is readAllSQL and heldSQL in one statement, so a subscriber's
// poll computes the horizon (a scan of pg_stat_activity: most of an idle
// poll's cost) once instead of twice. It returns the events, each with
// held, or one row of NULLs with held when there are none.
const tailSQL = horizonSQL + `,
held AS (` + heldBackSQL + ` AS held),
t AS (` + visibleSQL + `)
SELECT held.held, t.* FROM held LEFT JOIN t ON true
ORDER BY t.tx_id, t.global_position`

// readTail is ReadAll and HeldBack in one query (see tailSQL).
func (s *Store) readTail(ctx context.Context, after envelope.Position, limit int) ([]envelope.Event, bool, error) {
	rows, err := s.pool.Query(ctx, tailSQL, int64(after.Tx), after.Global, limit)
	if err != nil {
		return nil, false, fmt.Errorf("read tail after %s: %w", after, err)
	}
	defer rows.Close()
	var held bool
	evs := make([]envelope.Event, 0, min(limit, 1024))
	for rows.Next() {
		var tx, global, version *int64
		var id, stream, typ, corr, caus *string
		var at *time.Time
		var payload, meta []byte
		if err := rows.Scan(&held, &tx, &global, &id, &stream, &version, &typ, &at, &corr, &caus, &payload, &meta); err != nil {
			return nil, false, fmt.Errorf("read tail after %s: %w", after, err)
		}
		if tx == nil {
			break // no events: the one row of NULLs
		}
		e := envelope.Event{Position: envelope.Position{Tx: uint64(*tx), Global: *global}, StreamID: *stream,
			Version: *version, Type: *typ, RecordedAt: *at, CorrelationID: *corr, CausationID: *caus, Payload: payload}
		if err := fillIDMeta(&e, *id, meta); err != nil {
			return nil, false, err
		}
		evs = append(evs, e)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("read tail after %s: %w", after, err)
	}
	return evs, held, nil
}

// ReadAll implements store.Store.
func (s *Store) ReadAll(ctx context.Context, after envelope.Position, limit int) ([]envelope.Event, error) {
	rows, err := s.pool.Query(ctx, readAllSQL, int64(after.Tx), after.Global, limit)
	if err != nil {
		return nil, fmt.Errorf("read all after %s: %w", after, err)
	}
	evs, err := scanEvents(rows, limit)
	if err != nil {
		return nil, fmt.Errorf("read all after %s: %w", after, err)
	}
	return evs, nil
}

// HeldBack reports whether committed events after position wait behind a
// transaction that is still running.
func (s *Store) HeldBack(ctx context.Context, after envelope.Position) (bool, error) {
	var held bool
	if err := s.pool.QueryRow(ctx, heldSQL, int64(after.Tx), after.Global).Scan(&held); err != nil {
		return false, fmt.Errorf("held back check: %w", err)
	}
	return held, nil
}

// Head implements store.Store.
func (s *Store) Head(ctx context.Context) (envelope.Position, time.Time, error) {
	var tx, pos int64
	var at time.Time
	err := s.pool.QueryRow(ctx, `SELECT tx_id, global_position, recorded_at FROM events ORDER BY global_position DESC LIMIT 1`).Scan(&tx, &pos, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return envelope.Position{}, time.Time{}, nil
	}
	if err != nil {
		return envelope.Position{}, time.Time{}, fmt.Errorf("head: %w", err)
	}
	return envelope.Position{Tx: uint64(tx), Global: pos}, at, nil
}

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

// Subscribe implements store.Store. It holds one pooled connection for
// LISTEN while it runs.
func (s *Store) Subscribe(ctx context.Context, after envelope.Position, handle func(context.Context, []envelope.Event) error) error {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	// A LISTENing connection must not go back to the pool for others.
	conn := pc.Hijack()
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return fmt.Errorf("subscribe: listen: %w", err)
	}
	const batch = 1000
	pos := after
	heldWait := s.opts.HeldPoll
	for {
		evs, held, err := s.readTail(ctx, pos, batch)
		if err != nil {
			return err
		}
		if len(evs) > 0 {
			heldWait = s.opts.HeldPoll
			if err := handle(ctx, evs); err != nil {
				return err
			}
			pos = evs[len(evs)-1].Position
			if len(evs) == batch {
				continue
			}
		}
		wait := s.opts.IdlePoll
		if held {
			wait = heldWait
			heldWait = min(2*heldWait, s.opts.HeldPollMax)
		} else {
			heldWait = s.opts.HeldPoll
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		_, err = conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err):
			return fmt.Errorf("subscribe: wait: %w", err)
		}
		// Drain notifications that piled up while reading: one read covers them.
		for {
			dctx, cancel := context.WithTimeout(ctx, 0)
			_, err := conn.WaitForNotification(dctx)
			cancel()
			if err != nil {
				break
			}
		}
	}
}

// notifySQL sends the store's NOTIFY in a transaction of its own that does
// not wait for its WAL flush: a NOTIFY holds PostgreSQL's server-wide notify
// lock until its transaction ends, so a synchronous commit there made every
// notifier of the server (each store, each read-model builder) queue behind
// one fsync after another. A notification lost to a crash costs nothing:
// subscribers poll too. No arguments: pgx sends it in the simple protocol,
// which runs both statements in one implicit transaction.
const notifySQL = "SET LOCAL synchronous_commit = off; SELECT pg_notify('" + Channel + "', '')"

// notifier sends one NOTIFY per burst of appends. A poke that arrives while
// a NOTIFY is in flight is kept (channel of one) and sent after, so the last
// append of a burst is always announced.
func (s *Store) notifier(ctx context.Context) {
	defer close(s.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.poke:
		}
		if _, err := s.pool.Exec(ctx, notifySQL); err != nil && ctx.Err() == nil {
			s.log.Warn("event store notify failed; subscribers fall back to polling", "err", err)
		}
	}
}

func (s *Store) notify() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// Checkpoint returns the position a named reader of the log saved last
// (zero if none).
func (s *Store) Checkpoint(ctx context.Context, reader string) (envelope.Position, error) {
	var tx, pos int64
	err := s.pool.QueryRow(ctx, `SELECT tx_id, position FROM event_readers WHERE name = $1`, reader).Scan(&tx, &pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return envelope.Position{}, nil
	}
	if err != nil {
		return envelope.Position{}, fmt.Errorf("load checkpoint %s: %w", reader, err)
	}
	return envelope.Position{Tx: uint64(tx), Global: pos}, nil
}

// SaveCheckpoint records that reader has handled everything up to p.
func (s *Store) SaveCheckpoint(ctx context.Context, reader string, p envelope.Position) error {
	_, err := s.pool.Exec(ctx, `
INSERT INTO event_readers (name, tx_id, position, updated_at) VALUES ($1, $2, $3, now())
ON CONFLICT (name) DO UPDATE SET tx_id = excluded.tx_id, position = excluded.position, updated_at = now()`,
		reader, int64(p.Tx), p.Global)
	if err != nil {
		return fmt.Errorf("save checkpoint %s: %w", reader, err)
	}
	return nil
}

type metrics struct {
	appends   *prometheus.CounterVec
	events    prometheus.Counter
	latency   prometheus.Histogram
	conflicts prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keel_store_appends_total", Help: "Appends by outcome (ok, conflict, error).",
		}, []string{"outcome"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keel_store_appended_events_total", Help: "Events written by successful appends.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "keel_store_append_seconds", Help: "Append latency, including conflicts.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keel_store_append_conflicts_total", Help: "Appends refused for a version conflict.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.appends, m.events, m.latency, m.conflicts} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("event store metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(start time.Time, n int, err error) {
	m.latency.Observe(time.Since(start).Seconds())
	switch {
	case err == nil:
		m.appends.WithLabelValues("ok").Inc()
		m.events.Add(float64(n))
	case store.IsConflict(err):
		m.appends.WithLabelValues("conflict").Inc()
	default:
		m.appends.WithLabelValues("error").Inc()
	}
}

func mustSub(fsys embed.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}
