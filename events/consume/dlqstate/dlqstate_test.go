package dlqstate_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keel-commerce/keel/events/consume/dlqstate"
	"github.com/keel-commerce/keel/events/testenv"
)

func open(t *testing.T) (*dlqstate.Store, *pgxpool.Pool) {
	t.Helper()
	pool := testenv.Pool(t)
	st, err := dlqstate.Open(context.Background(), pool)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return st, pool
}

// TestOpenKeepsKeelctlHistory: the table and its goose version table keep
// the names keelctl created them under, so databases migrated before the
// store moved here see no new migration.
func TestOpenKeepsKeelctlHistory(t *testing.T) {
	_, pool := open(t)
	var applied []int64
	rows, err := pool.Query(context.Background(), `SELECT version_id FROM goose_keelctl_dlq_version WHERE is_applied AND version_id > 0 ORDER BY id`)
	if err != nil {
		t.Fatalf("version table: %v", err)
	}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		applied = append(applied, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(applied) != 1 || applied[0] != 1 {
		t.Errorf("applied versions = %v, want [1]", applied)
	}
	if _, err := pool.Exec(context.Background(), `SELECT 1 FROM keelctl_dlq_actions`); err != nil {
		t.Errorf("table keelctl_dlq_actions: %v", err)
	}
	if dlqstate.MigrationsTable != "goose_keelctl_dlq_version" {
		t.Errorf("MigrationsTable = %q", dlqstate.MigrationsTable)
	}
}

// TestReplicasOpenTogether: many processes may open the state at once on a
// fresh database.
func TestReplicasOpenTogether(t *testing.T) {
	testenv.ConcurrentMigrations(t, 8, func(ctx context.Context, pool *pgxpool.Pool) error {
		_, err := dlqstate.Open(ctx, pool)
		return err
	})
}

// TestRecordAndLookUp: a recorded action is found by its offset and, for a
// redrive, by its ce_id; recording again replaces it and counts; another
// topic sees none of it.
func TestRecordAndLookUp(t *testing.T) {
	ctx := context.Background()
	st, _ := open(t)
	tp, to := int32(2), int64(40)
	err := st.Locked(ctx, "t.dlq", func(tx *dlqstate.Tx) error {
		if _, ok, err := tx.At(ctx, 0, 7); err != nil || ok {
			t.Errorf("At before any record: ok=%v err=%v", ok, err)
		}
		if err := tx.Record(ctx, dlqstate.Action{Partition: 0, Offset: 7, CEID: "ev-1", Action: dlqstate.Redriven,
			OriginTopic: "t", TargetPartition: &tp, TargetOffset: &to, Actor: "ann@h"}); err != nil {
			return err
		}
		return tx.Record(ctx, dlqstate.Action{Partition: 1, Offset: 3, CEID: "ev-2", Action: dlqstate.Discarded,
			Reason: "bad data", OriginTopic: "t", Actor: "bob@h"})
	})
	if err != nil {
		t.Fatalf("record: %v", err)
	}
	err = st.Locked(ctx, "t.dlq", func(tx *dlqstate.Tx) error {
		a, ok, err := tx.At(ctx, 0, 7)
		if err != nil || !ok || a.CEID != "ev-1" || a.Action != dlqstate.Redriven || a.Times != 1 ||
			a.TargetPartition == nil || *a.TargetPartition != 2 || *a.TargetOffset != 40 || a.Actor != "ann@h" || a.At.IsZero() {
			t.Errorf("At(0, 7) = %+v, %v, %v", a, ok, err)
		}
		if a, ok, err := tx.LastRedrive(ctx, "ev-1"); err != nil || !ok || a.Offset != 7 {
			t.Errorf("LastRedrive(ev-1) = %+v, %v, %v", a, ok, err)
		}
		if _, ok, err := tx.LastRedrive(ctx, "ev-2"); err != nil || ok {
			t.Errorf("LastRedrive of a discarded event: ok=%v err=%v", ok, err)
		}
		return tx.Record(ctx, dlqstate.Action{Partition: 0, Offset: 7, CEID: "ev-1", Action: dlqstate.Discarded,
			Reason: "again", OriginTopic: "t", Actor: "cy@h"})
	})
	if err != nil {
		t.Fatalf("second record: %v", err)
	}
	all, err := st.All(ctx, "t.dlq")
	if err != nil {
		t.Fatalf("all: %v", err)
	}
	if len(all) != 2 {
		t.Fatalf("All = %+v, want 2 actions", all)
	}
	if a := all[0]; a.Offset != 7 || a.Action != dlqstate.Discarded || a.Times != 2 || a.Reason != "again" || a.TargetPartition != nil {
		t.Errorf("replaced action = %+v", a)
	}
	if a := all[1]; a.Partition != 1 || a.Offset != 3 || a.Reason != "bad data" {
		t.Errorf("second action = %+v", a)
	}
	if other, err := st.All(ctx, "other.dlq"); err != nil || len(other) != 0 {
		t.Errorf("All(other topic) = %+v, %v", other, err)
	}
}

// TestLockedSerialisesATopic: while one transaction holds a topic's lock, a
// second waits for it; so two operators cannot both see a dead letter as
// not yet redriven.
func TestLockedSerialisesATopic(t *testing.T) {
	ctx := context.Background()
	st, _ := open(t)
	held, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = st.Locked(ctx, "t.dlq", func(*dlqstate.Tx) error {
			close(held)
			<-release
			return nil
		})
	})
	<-held
	entered := make(chan struct{})
	wg.Go(func() {
		_ = st.Locked(ctx, "t.dlq", func(*dlqstate.Tx) error { close(entered); return nil })
	})
	if err := st.Locked(ctx, "other.dlq", func(*dlqstate.Tx) error { return nil }); err != nil {
		t.Errorf("another topic's lock: %v", err)
	}
	select {
	case <-entered:
		t.Error("second transaction entered while the first held the lock")
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Error("second transaction did not enter after the first ended")
	}
	wg.Wait()
}
