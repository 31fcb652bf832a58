package pg

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keel-commerce/keel/events/envelope"
)

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
