package pg

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/keel-commerce/keel/events/envelope"
)

// ReadStreamTx is ReadStream inside tx (which sees its own appends).
func (s *Store) ReadStreamTx(ctx context.Context, tx pgx.Tx, stream string, from int64, limit int) ([]envelope.Event, error) {
	return readStream(ctx, tx, stream, from, limit)
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
