package readmodel

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/keel-commerce/keel/events/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// NotifyChannel is the PostgreSQL channel a builder notifies, with the
// projection's name as payload, when it commits events or a copy switches.
const NotifyChannel = "keel_readmodel"

// Migrate creates or upgrades the generations table in pool's database.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	if err := migrate.Up(ctx, pool, sub, "goose_readmodel_version"); err != nil {
		return fmt.Errorf("readmodel: %w", err)
	}
	return nil
}

// Generation is one copy of a projection's tables.
type Generation struct {
	Projection  string
	Number      int
	Schema      string
	State       string // building, active or retired
	Positions   map[string]string
	EventsRead  int64
	CreatedAt   time.Time
	ActivatedAt time.Time
}

var validName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,40}$`)

func schemaName(projection string, n int) string { return fmt.Sprintf("rm_%s_%d", projection, n) }

// lockKey is the advisory lock that orders live writes against a switch.
func lockKey(projection string) int64 {
	h := fnv.New64a()
	h.Write([]byte("keel-readmodel:" + projection))
	return int64(h.Sum64() >> 1)
}

// Querier is a pool, a connection or a transaction.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const generationCols = `projection, generation, schema_name, state, positions, events_read, created_at, activated_at`

func scanGeneration(row pgx.Row) (Generation, error) {
	var g Generation
	var activated *time.Time
	err := row.Scan(&g.Projection, &g.Number, &g.Schema, &g.State, &g.Positions, &g.EventsRead, &g.CreatedAt, &activated)
	if activated != nil {
		g.ActivatedAt = *activated
	}
	return g, err
}

// Generations lists every copy of every projection, newest first per
// projection.
func Generations(ctx context.Context, q Querier) ([]Generation, error) {
	rows, err := q.Query(ctx, `SELECT `+generationCols+` FROM readmodel_generations ORDER BY projection, generation DESC`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Generation
	for rows.Next() {
		g, err := scanGeneration(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// ErrNoActive means a projection has no active copy yet (its builder has
// never started).
var ErrNoActive = errors.New("readmodel: projection has no active copy")

// Active returns the projection's active copy.
func Active(ctx context.Context, q Querier, projection string) (Generation, error) {
	g, err := scanGeneration(q.QueryRow(ctx, `SELECT `+generationCols+` FROM readmodel_generations WHERE projection = $1 AND state = 'active'`, projection))
	if errors.Is(err, pgx.ErrNoRows) {
		return g, fmt.Errorf("%w: %s", ErrNoActive, projection)
	}
	return g, err
}

// EnsureActive gives p an empty active copy if it has none: what a builder
// does on its first start. Safe to run concurrently.
func EnsureActive(ctx context.Context, pool *pgxpool.Pool, p Projection) (Generation, error) {
	if !validName.MatchString(p.Name()) {
		return Generation{}, fmt.Errorf("readmodel: invalid projection name %q", p.Name())
	}
	if err := Migrate(ctx, pool); err != nil {
		return Generation{}, err
	}
	var g Generation
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey(p.Name())); err != nil {
			return err
		}
		var err error
		if g, err = Active(ctx, tx, p.Name()); !errors.Is(err, ErrNoActive) {
			return err
		}
		if g, err = createGeneration(ctx, tx, p, "active"); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE readmodel_generations SET activated_at = now() WHERE projection = $1 AND generation = $2`, p.Name(), g.Number)
		return err
	})
	if err != nil {
		return g, fmt.Errorf("readmodel: ensure %s has an active copy: %w", p.Name(), err)
	}
	return g, nil
}

// createGeneration makes the next copy's schema and tables.
func createGeneration(ctx context.Context, tx pgx.Tx, p Projection, state string) (Generation, error) {
	var n int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(generation), 0) + 1 FROM readmodel_generations WHERE projection = $1`, p.Name()).Scan(&n); err != nil {
		return Generation{}, err
	}
	schema := schemaName(p.Name(), n)
	if _, err := tx.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
		return Generation{}, err
	}
	if _, err := tx.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
		return Generation{}, err
	}
	for _, t := range allTables(p) {
		for _, stmt := range t.ddl(schema) {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return Generation{}, fmt.Errorf("create %s: %w", t.Name, err)
			}
		}
	}
	return scanGeneration(tx.QueryRow(ctx, `INSERT INTO readmodel_generations (projection, generation, schema_name, state)
VALUES ($1, $2, $3, $4) RETURNING `+generationCols, p.Name(), n, schema, state))
}
