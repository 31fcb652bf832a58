package readmodel

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// preload reads the rows of a one-column-key table with the given keys in
// one query, and remembers the keys without a row as absent.
func (m *memRows) preload(ctx context.Context, def *TableDef, keys []string) error {
	if def.Key != 1 {
		return fmt.Errorf("readmodel: preload %s: key of %d columns", def.Name, def.Key)
	}
	t := m.table(def)
	want := make([]string, 0, len(keys))
	for _, k := range keys {
		if _, ok := t.rows[k]; !ok {
			t.rows[k] = &memRow{} // absent unless read below
			m.rows++
			want = append(want, k)
		}
	}
	if len(want) == 0 {
		return nil
	}
	sql := SelectAll(def, m.schema) + " WHERE " + pgx.Identifier{def.Columns[0].Name}.Sanitize() + " = ANY($1)"
	rows, err := m.db.Query(ctx, sql, want)
	if err != nil {
		return fmt.Errorf("preload %s: %w", def.Name, err)
	}
	defer rows.Close()
	dests, vals := scanDests(def.Columns)
	for rows.Next() {
		if err := rows.Scan(dests...); err != nil {
			return fmt.Errorf("preload %s: %w", def.Name, err)
		}
		v := vals()
		r := t.rows[keyString(v[:1])]
		r.vals, r.inDB = v, true
	}
	return rows.Err()
}

// upsertDirty writes every changed row in tx, in one round trip: the live
// builder's batches are small, where COPY's set-up would cost more than it
// saves.
func (m *memRows) upsertDirty(ctx context.Context, tx pgx.Tx) error {
	b := &pgx.Batch{}
	for def, t := range m.tables {
		for _, r := range t.rows {
			if r.dirty {
				b.Queue(m.sql.get(m.schema, def, true), dbValues(def.Columns, r.vals)...)
			}
		}
	}
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write rows: %w", err)
	}
	return nil
}
