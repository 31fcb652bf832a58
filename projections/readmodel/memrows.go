package readmodel

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// memRows is a rebuild's working set: rows of one copy held in memory,
// read through from the database on a miss, written back in bulk by
// flush. Only the rebuild writes to a copy that is being built, so what it
// holds is authoritative.
type memRows struct {
	db     Querier
	schema string
	// fresh: every row of this copy is held here (the copy started empty
	// in this process and nothing has been evicted since), so a miss is a
	// row that does not exist (no query needed).
	fresh  bool
	tables map[*TableDef]*memTable
	rows   int
	sql    *sqlCache
}

type memTable struct {
	rows map[string]*memRow
}

type memRow struct {
	vals  []any // nil: known not to exist
	dirty bool
	inDB  bool
}

func newMemRows(db Querier, schema string, fresh bool) *memRows {
	return &memRows{db: db, schema: schema, fresh: fresh, tables: map[*TableDef]*memTable{}, sql: &sqlCache{}}
}

func (m *memRows) table(def *TableDef) *memTable {
	t := m.tables[def]
	if t == nil {
		t = &memTable{rows: map[string]*memRow{}}
		m.tables[def] = t
	}
	return t
}

func (m *memRows) get(ctx context.Context, def *TableDef, key []any) ([]any, bool, error) {
	t := m.table(def)
	k := keyString(key)
	if r, ok := t.rows[k]; ok {
		return r.vals, r.vals != nil, nil
	}
	r := &memRow{}
	if !m.fresh {
		dests, vals := scanDests(def.Columns)
		err := m.db.QueryRow(ctx, m.sql.get(m.schema, def, false), dbValues(def.Columns[:def.Key], key)...).Scan(dests...)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return nil, false, fmt.Errorf("read %s: %w", def.Name, err)
		default:
			r.vals, r.inDB = vals(), true
		}
	}
	t.rows[k] = r
	m.rows++
	return r.vals, r.vals != nil, nil
}

func (m *memRows) put(_ context.Context, def *TableDef, vals []any) error {
	t := m.table(def)
	k := keyString(vals[:def.Key])
	r, ok := t.rows[k]
	if !ok {
		r = &memRow{}
		t.rows[k] = r
		m.rows++
	}
	r.vals, r.dirty = vals, true
	return nil
}

// flush writes the dirty rows in tx: rows new to the database by COPY,
// changed ones through a temporary table and one upsert. The caller calls
// flushed after tx commits.
func (m *memRows) flush(ctx context.Context, tx pgx.Tx) error {
	for def, t := range m.tables {
		var fresh, changed [][]any
		for _, r := range t.rows {
			if !r.dirty {
				continue
			}
			if r.inDB {
				changed = append(changed, dbValues(def.Columns, r.vals))
			} else {
				fresh = append(fresh, dbValues(def.Columns, r.vals))
			}
		}
		cols := def.columnNames()
		if len(fresh) > 0 {
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{m.schema, def.Name}, cols, pgx.CopyFromRows(fresh)); err != nil {
				return fmt.Errorf("copy into %s: %w", def.Name, err)
			}
		}
		if len(changed) > 0 {
			tmp := "flush_" + m.schema + "_" + def.Name
			if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TEMP TABLE IF NOT EXISTS %s (LIKE %s) ON COMMIT DROP`,
				pgx.Identifier{tmp}.Sanitize(), def.qualified(m.schema))); err != nil {
				return fmt.Errorf("flush %s: %w", def.Name, err)
			}
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{tmp}, cols, pgx.CopyFromRows(changed)); err != nil {
				return fmt.Errorf("flush %s: %w", def.Name, err)
			}
			names := strings.Join(quoteAll(cols), ", ")
			if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (%s) SELECT %s FROM %s %s`,
				def.qualified(m.schema), names, names, pgx.Identifier{tmp}.Sanitize(), def.onConflict())); err != nil {
				return fmt.Errorf("flush %s: %w", def.Name, err)
			}
			if _, err := tx.Exec(ctx, `TRUNCATE `+pgx.Identifier{tmp}.Sanitize()); err != nil {
				return fmt.Errorf("flush %s: %w", def.Name, err)
			}
		}
	}
	return nil
}

// flushed marks everything written; past maxRows it forgets the rows (the
// next reads go to the database) to bound memory.
func (m *memRows) flushed(maxRows int) {
	if m.rows > maxRows {
		m.tables = map[*TableDef]*memTable{}
		m.rows = 0
		m.fresh = false // the rows are in the database only now
		return
	}
	for _, t := range m.tables {
		for _, r := range t.rows {
			if r.dirty {
				r.dirty, r.inDB = false, true
			}
		}
	}
}

// Memory returns Rows held in memory only: for a projection's pure tests
// (given events → Apply → expected rows), with no database.
func Memory() Rows { return newMemRows(nil, "", true) }

// ApplyAll folds evs into rows through p as a builder would: skipping
// events a copy already has, refusing gaps. For tests.
func ApplyAll(ctx context.Context, p Projection, rows Rows, evs ...Event) error {
	for _, ev := range evs {
		if _, err := apply(ctx, p, rows, ev); err != nil {
			return err
		}
	}
	return nil
}
