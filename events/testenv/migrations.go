package testenv

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ConcurrentMigrations checks that a component's migrations may run from
// many replicas at once: n calls of migrate start together on a fresh
// database, every one must succeed, and the schema they leave must be the
// one a single call leaves on another fresh database.
func ConcurrentMigrations(t testing.TB, n int, migrate func(context.Context, *pgxpool.Pool) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	alone := Pool(t)
	if err := migrate(ctx, alone); err != nil {
		t.Fatalf("one migrator: %v", err)
	}
	together := Pool(t)
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = migrate(ctx, together)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("migrator %d of %d started together: %v", i+1, n, err)
		}
	}
	if want, got := Schema(t, alone), Schema(t, together); got != want {
		t.Errorf("schema after %d migrators together:\n%s\nafter one:\n%s", n, got, want)
	}
}

// Schema describes the public schema of pool's database, one sorted line
// per column, constraint and index, and the rows of every goose version
// table, so two databases can be compared.
func Schema(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, `
SELECT format('column %s.%s %s null=%s default=%s', table_name, column_name, data_type, is_nullable, column_default)
  FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT format('constraint %s %s', conrelid::regclass, pg_get_constraintdef(oid))
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public'
ORDER BY 1`)
	if err != nil {
		t.Fatalf("testenv: schema: %v", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("testenv: schema: %v", err)
	}
	var versions []string
	for _, l := range lines {
		if strings.HasPrefix(l, "column goose_") && strings.Contains(l, ".version_id ") {
			versions = append(versions, strings.Fields(strings.TrimPrefix(l, "column "))[0])
		}
	}
	for _, v := range versions {
		table := strings.TrimSuffix(v, ".version_id")
		var applied []string
		rows, err := pool.Query(ctx, fmt.Sprintf(`SELECT version_id::text FROM %s WHERE is_applied ORDER BY id`, pgx.Identifier{table}.Sanitize()))
		if err == nil {
			applied, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			t.Fatalf("testenv: schema: %s: %v", table, err)
		}
		lines = append(lines, fmt.Sprintf("versions %s %s", table, strings.Join(applied, " ")))
	}
	return strings.Join(lines, "\n")
}
