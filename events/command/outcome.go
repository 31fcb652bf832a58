package command

import (
	"bytes"
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/keel-commerce/keel/events/envelope"
)

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
