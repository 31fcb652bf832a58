package migrate_test

import (
	"context"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keel-commerce/keel/events/migrate"
	"github.com/keel-commerce/keel/events/testenv"
)

// TestConcurrentUp: eight migrators of one component start together on a
// fresh database; its migrations create without IF NOT EXISTS, so only the
// session lock keeps the losers from failing. All succeed, and the schema
// and recorded versions are those of a single migrator.
func TestConcurrentUp(t *testing.T) {
	fsys := fstest.MapFS{
		"migrations/00001_things.sql": {Data: []byte(`-- +goose Up
CREATE TABLE things (id text PRIMARY KEY, n bigint NOT NULL);
CREATE INDEX things_n ON things (n);
-- +goose Down
DROP TABLE things;
`)},
		"migrations/00002_things_note.sql": {Data: []byte(`-- +goose Up
ALTER TABLE things ADD COLUMN note text;
-- +goose Down
ALTER TABLE things DROP COLUMN note;
`)},
	}
	testenv.ConcurrentMigrations(t, 8, func(ctx context.Context, pool *pgxpool.Pool) error {
		return migrate.UpDir(ctx, pool, fsys, "migrations", "goose_things_version")
	})
}
