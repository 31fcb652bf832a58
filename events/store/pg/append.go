package pg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/segmentio/ksuid"

	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/store"
)

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
