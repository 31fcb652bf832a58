package consume

import (
	"context"
	"embed"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keel-commerce/keel/events/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// MigrationsTable is the goose version table of this component. Other
// components (the event store) run their own goose migrations in the same
// database, each with its own version table, so they never see each
// other's versions.
const MigrationsTable = "goose_consume_version"

// Migrate creates or upgrades the checkpoint table (consumer_checkpoints)
// in pool's database. Run calls it; tools that read checkpoints may call it
// too. It is safe to call concurrently from many processes: a session lock
// serialises them.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	if err := migrate.Up(ctx, pool, mustSub(migrations, "migrations"), MigrationsTable); err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	return nil
}

// checkpoint is what this member last read or wrote for one partition: the
// base of the next compare-and-set.
type checkpoint struct {
	next   int64 // offset of the next record to apply
	exists bool  // whether a row exists (UPDATE) or not (INSERT)
}

// errConflict reports a failed checkpoint compare-and-set: the row is not
// where this member last left it, so someone else moved the partition on.
var errConflict = errors.New("checkpoint moved by another member")

// loadCheckpoints reads the checkpoints of partitions of topic for group.
// Partitions without a row are absent from the result.
func loadCheckpoints(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, group, topic string, partitions []int32) (map[int32]int64, error) {
	rows, err := q.Query(ctx, `SELECT partition, next_offset FROM consumer_checkpoints
		WHERE group_id = $1 AND topic = $2 AND partition = ANY($3)`, group, topic, partitions)
	if err != nil {
		return nil, fmt.Errorf("load checkpoints of %s/%s: %w", group, topic, err)
	}
	out := make(map[int32]int64, len(partitions))
	var p int32
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&p, &n}, func() error {
		out[p] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load checkpoints of %s/%s: %w", group, topic, err)
	}
	return out, nil
}

// casCheckpoint moves the checkpoint of (group, topic, partition) from base
// to next inside tx, or returns errConflict if the row is not at base.
//
// It is a compare-and-set rather than an upsert because it is the fence
// against zombies: a member that was kicked out of the group (a batch took
// longer than the rebalance timeout, a long GC pause, a network partition)
// keeps processing what it polled, unaware; the partition's new owner read
// the checkpoint when it was assigned. Whichever of the two commits second
// finds the row moved and rolls back, so each record's effects are applied
// once. It also makes an ambiguous COMMIT (connection lost after sending it)
// safe to retry: if it did commit, the retry's CAS fails and the member
// re-reads the row.
func casCheckpoint(ctx context.Context, tx pgx.Tx, group, topic string, partition int32, base checkpoint, next int64) error {
	var sql string
	var args []any
	if base.exists {
		sql = `UPDATE consumer_checkpoints SET next_offset = $4, updated_at = now()
			WHERE group_id = $1 AND topic = $2 AND partition = $3 AND next_offset = $5`
		args = []any{group, topic, partition, next, base.next}
	} else {
		sql = `INSERT INTO consumer_checkpoints (group_id, topic, partition, next_offset)
			VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`
		args = []any{group, topic, partition, next}
	}
	tag, err := tx.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("write checkpoint %s/%s/%d: %w", group, topic, partition, err)
	}
	if tag.RowsAffected() != 1 {
		return errConflict
	}
	return nil
}
