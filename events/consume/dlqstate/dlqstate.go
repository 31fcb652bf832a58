// Package dlqstate keeps what was done with each dead letter the consumer
// runtime (events/consume) produced: redriven or discarded, why, by whom,
// when, and where a redrive landed.
//
// It is a small table, keelctl_dlq_actions, one row per dead letter (dlq
// topic, partition, offset) with its ce_id. A consumer-group offset on the
// dlq topic was the other choice; it was not taken because an offset is
// one watermark per partition: it cannot say "offset 17 redriven, 12 left
// for investigation, 13 discarded because …", cannot hold a reason, and
// cannot dedupe by ce_id across partitions or across a record that was
// dead-lettered twice. Every change runs in one transaction holding an
// advisory lock on the dlq topic (Store.Locked), so two operators cannot
// act on the same dead letter at once.
//
// keelctl's dlq commands are its users; the table and version table keep
// the keelctl names they were created under, so existing databases keep
// their migration history.
package dlqstate

import (
	"context"
	"embed"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keel-commerce/keel/events/migrate"
)

// MigrationsTable is the goose version table of the dead-letter state.
const MigrationsTable = "goose_keelctl_dlq_version"

//go:embed migrations/*.sql
var migrations embed.FS

// Actions a dead letter can have had.
const (
	Redriven  = "redriven"
	Discarded = "discarded"
)

// Action is one row of keelctl_dlq_actions: what was last done with the
// dead letter at Partition:Offset of a dlq topic.
type Action struct {
	Partition       int32
	Offset          int64
	CEID            string
	Action          string // Redriven or Discarded
	Reason          string
	OriginTopic     string
	TargetPartition *int32 // where a redrive landed
	TargetOffset    *int64
	Times           int // how many times it was acted on; set by the store
	Actor           string
	At              time.Time // set by the store
}

// Store is the dead-letter state in one database.
type Store struct{ pool *pgxpool.Pool }

// Open creates or upgrades the table in pool's database and returns the
// store on it. It is safe to call from many processes at once (the
// migration takes a session lock). The caller keeps owning pool.
func Open(ctx context.Context, pool *pgxpool.Pool) (*Store, error) {
	if err := migrate.UpDir(ctx, pool, migrations, "migrations", MigrationsTable); err != nil {
		return nil, err
	}
	return &Store{pool: pool}, nil
}

const actionCols = `dlq_partition, dlq_offset, ce_id, action, reason, origin_topic, target_partition, target_offset, times, actor, at`

func scanAction(row pgx.Row) (Action, error) {
	var a Action
	err := row.Scan(&a.Partition, &a.Offset, &a.CEID, &a.Action, &a.Reason, &a.OriginTopic, &a.TargetPartition, &a.TargetOffset, &a.Times, &a.Actor, &a.At)
	return a, err
}

// All returns every recorded action on topic, by partition and offset.
func (s *Store) All(ctx context.Context, topic string) ([]Action, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+actionCols+` FROM keelctl_dlq_actions WHERE dlq_topic = $1 ORDER BY dlq_partition, dlq_offset`, topic)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Action, error) { return scanAction(r) })
}

// Locked runs fn in a transaction holding topic's advisory lock: actions
// on one dlq topic are serialised, across processes.
func (s *Store) Locked(ctx context.Context, topic string, fn func(*Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('keelctl-dlq:' || $1, 0))`, topic); err != nil {
			return err
		}
		return fn(&Tx{tx: tx, topic: topic})
	})
}

// Tx reads and records actions on one dlq topic under its lock.
type Tx struct {
	tx    pgx.Tx
	topic string
}

// At returns the action recorded for the dead letter at partition:offset;
// ok is false if there is none.
func (t *Tx) At(ctx context.Context, partition int32, offset int64) (a Action, ok bool, err error) {
	return found(scanAction(t.tx.QueryRow(ctx, `SELECT `+actionCols+` FROM keelctl_dlq_actions
		WHERE dlq_topic = $1 AND dlq_partition = $2 AND dlq_offset = $3`, t.topic, partition, offset)))
}

// LastRedrive returns the latest redrive of any dead letter of the event
// ceID (an event can be dead-lettered again after a redrive); ok is false
// if it was never redriven.
func (t *Tx) LastRedrive(ctx context.Context, ceID string) (a Action, ok bool, err error) {
	return found(scanAction(t.tx.QueryRow(ctx, `SELECT `+actionCols+` FROM keelctl_dlq_actions
		WHERE dlq_topic = $1 AND ce_id = $2 AND action = 'redriven' ORDER BY at DESC LIMIT 1`, t.topic, ceID)))
}

func found(a Action, err error) (Action, bool, error) {
	switch {
	case err == nil:
		return a, true, nil
	case errors.Is(err, pgx.ErrNoRows):
		return Action{}, false, nil
	}
	return Action{}, false, err
}

// Record stores a as the action on its dead letter, replacing an earlier
// one (and counting it in Times). Times and At are the store's.
func (t *Tx) Record(ctx context.Context, a Action) error {
	_, err := t.tx.Exec(ctx, `INSERT INTO keelctl_dlq_actions
		(dlq_topic, dlq_partition, dlq_offset, ce_id, action, reason, origin_topic, target_partition, target_offset, actor)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		ON CONFLICT (dlq_topic, dlq_partition, dlq_offset) DO UPDATE SET
			action = EXCLUDED.action, reason = EXCLUDED.reason, target_partition = EXCLUDED.target_partition,
			target_offset = EXCLUDED.target_offset, actor = EXCLUDED.actor, at = now(),
			times = keelctl_dlq_actions.times + 1`,
		t.topic, a.Partition, a.Offset, a.CEID, a.Action, a.Reason, a.OriginTopic, a.TargetPartition, a.TargetOffset, a.Actor)
	return err
}
