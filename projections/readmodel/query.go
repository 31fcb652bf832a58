package readmodel

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// SelectAll is "SELECT <every column> FROM schema.table", for query
// functions to extend with WHERE, ORDER BY and LIMIT.
func SelectAll(def *TableDef, schema string) string {
	return fmt.Sprintf("SELECT %s FROM %s", strings.Join(quoteAll(def.columnNames()), ", "), def.qualified(schema))
}

// Query runs sql (which must select every column of t, in order, as
// SelectAll does) and decodes the rows.
func Query[R any](ctx context.Context, q Querier, t *Table[R], sql string, args ...any) ([]R, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", t.Name, err)
	}
	defer rows.Close()
	dests, vals := scanDests(t.Columns)
	var out []R
	for rows.Next() {
		if err := rows.Scan(dests...); err != nil {
			return nil, fmt.Errorf("query %s: %w", t.Name, err)
		}
		r, err := t.Decode(vals())
		if err != nil {
			return nil, fmt.Errorf("query %s: %w", t.Name, err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Find returns the row of t with the given key in a copy, and whether it
// exists.
func Find[R any](ctx context.Context, q Querier, t *Table[R], schema string, key ...any) (R, bool, error) {
	var zero R
	if len(key) != t.Key {
		return zero, false, fmt.Errorf("readmodel: %s: key has %d values, want %d", t.Name, len(key), t.Key)
	}
	dests, vals := scanDests(t.Columns)
	err := q.QueryRow(ctx, t.selectSQL(schema), dbValues(t.Columns[:t.Key], canonicalAll(t.Columns[:t.Key], key))...).Scan(dests...)
	if errors.Is(err, pgx.ErrNoRows) {
		return zero, false, nil
	}
	if err != nil {
		return zero, false, fmt.Errorf("find %s: %w", t.Name, err)
	}
	r, err := t.Decode(vals())
	return r, err == nil, err
}
