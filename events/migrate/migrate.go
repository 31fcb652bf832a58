// Package migrate applies a component's embedded, versioned SQL migrations
// with goose; every Keel component with tables uses it. Each component (event store, consumer checkpoints, a
// projection) keeps its own version table, so several can share a database
// and evolve independently. A PostgreSQL session lock makes concurrent
// starts of many replicas safe: one migrates, the others wait.
package migrate

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"
)

// Up applies every migration in fsys (goose SQL files at its root) not yet
// recorded in versionTable.
func Up(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, versionTable string) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	st, err := database.NewStore(database.DialectPostgres, versionTable)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", versionTable, err)
	}
	// goose polls a held lock every 5 s by default: replicas starting
	// together would each wait that long behind the one migrating. Poll
	// every second, for the same 5 minutes at most.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID(versionTable)), lock.WithLockTimeout(1, 300))
	if err != nil {
		return fmt.Errorf("migrate %s: %w", versionTable, err)
	}
	p, err := goose.NewProvider("", db, fsys, goose.WithStore(st), goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("migrate %s: %w", versionTable, err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate %s: %w", versionTable, err)
	}
	return nil
}

// UpDir is Up of the migrations in dir of fsys, the usual
// `//go:embed migrations/*.sql` of a component.
func UpDir(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, dir, versionTable string) error {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", versionTable, err)
	}
	return Up(ctx, pool, sub, versionTable)
}

// lockID derives a stable advisory-lock id per version table (FNV-1a), so
// two components migrating one database do not wait on each other.
func lockID(table string) int64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(table); i++ {
		h ^= uint64(table[i])
		h *= 1099511628211
	}
	return int64(h >> 1)
}
