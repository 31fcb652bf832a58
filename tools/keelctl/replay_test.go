package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/consume"
)

func TestGroupDatabase(t *testing.T) {
	for group, want := range map[string]string{
		"projection.order_history": "keel_projections",
		"checkout-saga":            "keel_checkout",
		"stock-commands":           "keel_stock",
		"payments-commands":        "keel_payments",
		"my-team":                  "",
		"-commands":                "",
		"test-stock-commands":      "", // a prefixed group: ask
	} {
		got, ok := groupDatabase(group)
		if got != want || ok != (want != "") {
			t.Errorf("groupDatabase(%q) = %q %v, want %q", group, got, ok, want)
		}
	}
}

// checkpointRows reads group's checkpoints: partition → next offset.
func checkpointRows(t *testing.T, pool *pgxpool.Pool, group, topic string) map[int32]int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT partition, next_offset FROM consumer_checkpoints WHERE group_id = $1 AND topic = $2`, group, topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	var p int32
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&p, &n}, func() error { out[p] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReplay(t *testing.T) {
	ctx := context.Background()
	topic := uniq("keelctl-test-")
	freshTopics(t, 2, topic)
	freshTopics(t, 1, topic+".dlq")
	dbURL := freshDB(t)
	pool := openTestPool(t, dbURL)
	db := "--database-url=" + dbURL
	group := uniq("keelctl-test-group-")

	// Partition 0: five records a minute apart, from t0; partition 1: three.
	prod, err := kgo.NewClient(kgo.SeedBrokers(testBrokers()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	for part, n := range map[int32]int{0: 5, 1: 3} {
		for i := range n {
			r := stockEvent(t, topic, fmt.Sprintf("SKU-%d-%d", part, i), 1)
			r.Partition, r.Timestamp = part, t0.Add(time.Duration(i)*time.Minute)
			if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}

	// A real consumer of the group handles everything: each record it
	// commits is a row of handled, in its transaction.
	if _, err := pool.Exec(ctx, `CREATE TABLE handled (part integer, "offset" bigint)`); err != nil {
		t.Fatal(err)
	}
	c, err := consume.New(consume.Config{Brokers: testBrokers(), Group: group, Topics: []string{topic}, Pool: pool,
		KafkaOpts: []kgo.Opt{kgo.HeartbeatInterval(300 * time.Millisecond), kgo.SessionTimeout(6 * time.Second),
			kgo.FetchMaxWait(200 * time.Millisecond)}},
		consume.HandlerFunc(func(ctx context.Context, tx pgx.Tx, rec *kgo.Record) error {
			_, err := tx.Exec(ctx, `INSERT INTO handled VALUES ($1, $2)`, rec.Partition, rec.Offset)
			return err
		}))
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("consumer: %v", err)
			}
		})
	}
	defer stop()
	waitCheckpoints(t, pool, topic, 8, done)
	if got := checkpointRows(t, pool, group, topic); got[0] != 5 || got[1] != 3 {
		t.Fatalf("checkpoints %v, want 0:5 1:3", got)
	}

	// Dry run from an offset in one partition: nothing moves.
	r := mustCode(t, exitOK, "replay", "--group", group, "--topic", topic, "--from-offset", "2", "--partition", "0", db, "--json")
	rows := jsonLines(t, r.out)
	if len(rows) != 1 || rows[0]["partition"] != 0.0 || rows[0]["checkpoint"] != 5.0 || rows[0]["new_offset"] != 2.0 ||
		rows[0]["records_rerun"] != 3.0 || rows[0]["action"] != "would move back" {
		t.Fatalf("dry run from offset: %v", rows)
	}
	r = mustCode(t, exitOK, "replay", "--group", group, "--topic", topic, "--from-time", t0.Add(90*time.Second).Format(time.RFC3339), db)
	for _, w := range []string{"would move back", "dry run: 4 record(s) would be re-run", "--execute"} { // 3 on p0, 1 on p1
		if !strings.Contains(r.out, w) {
			t.Errorf("dry run from a time lacks %q:\n%s", w, r.out)
		}
	}
	if got := checkpointRows(t, pool, group, topic); got[0] != 5 || got[1] != 3 {
		t.Fatalf("a dry run moved the checkpoints: %v", got)
	}

	// Usage and range errors.
	mustCode(t, exitUsage, "replay", "--group", group, "--topic", topic, db)
	mustCode(t, exitUsage, "replay", "--group", group, "--topic", topic, "--from-offset", "1", "--from-time", t0.Format(time.RFC3339), db)
	mustCode(t, exitUsage, "replay", "--group", group, "--topic", topic, "--from-time", "yesterday", db)
	mustCode(t, exitUsage, "replay", "--group", "my-team", "--topic", topic, "--from-offset", "0")
	mustCode(t, exitNotFound, "replay", "--group", group, "--topic", topic, "--from-offset", "9", "--partition", "0", db)
	mustCode(t, exitNotFound, "replay", "--group", group, "--topic", topic+"-nope", "--from-offset", "0", db)

	// Execute from the time: both partitions move back in one go.
	r = mustCode(t, exitOK, "replay", "--group", group, "--topic", topic, "--from-time", t0.Add(90*time.Second).Format(time.RFC3339), db, "--execute")
	if !strings.Contains(r.out, "moved 2 checkpoint(s)") {
		t.Errorf("execute output: %s", r.out)
	}
	if got := checkpointRows(t, pool, group, topic); got[0] != 2 || got[1] != 2 {
		t.Fatalf("checkpoints after the replay: %v, want 0:2 1:2", got)
	}

	// The running consumer notices at its next commit: a new record on
	// partition 0 makes it commit, the compare-and-set fails, it re-reads
	// the row and handles 2, 3, 4 again, then the new one.
	r0 := stockEvent(t, topic, "SKU-after-replay", 1)
	r0.Partition = 0
	if err := prod.ProduceSync(ctx, r0).FirstErr(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var again, fresh int
		if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE "offset" BETWEEN 2 AND 4), count(*) FILTER (WHERE "offset" = 5)
FROM handled WHERE part = 0`).Scan(&again, &fresh); err != nil {
			t.Fatal(err)
		}
		if again == 6 && fresh == 1 && checkpointRows(t, pool, group, topic)[0] == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the replay partition 0 handled offsets 2-4 %d times in all (want 6) and offset 5 %d times (want 1)", again, fresh)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The rest reads rows the consumer would move (a rebalance re-reads
	// them and re-runs partition 1 from 2).
	stop()

	// Forward is refused, dry run and execute, unless allowed.
	r = mustCode(t, exitOK, "replay", "--group", group, "--topic", topic, "--from-offset", "3", "--partition", "1", db)
	if !strings.Contains(r.out, "refused without --allow-forward") {
		t.Errorf("dry run forward: %s", r.out)
	}
	mustCode(t, exitRefused, "replay", "--group", group, "--topic", topic, "--from-offset", "3", "--partition", "1", db, "--execute")
	if got := checkpointRows(t, pool, group, topic); got[1] != 2 {
		t.Fatalf("a refused forward move changed partition 1: %v", got)
	}
	mustCode(t, exitOK, "replay", "--group", group, "--topic", topic, "--from-offset", "3", "--partition", "1", db, "--execute", "--allow-forward")
	if got := checkpointRows(t, pool, group, topic); got[0] != 6 || got[1] != 3 {
		t.Fatalf("checkpoints after the allowed forward move: %v, want 0:6 1:3", got)
	}
}
