package pg

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/keel-commerce/keel/events/envelope"
)

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
