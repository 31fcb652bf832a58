package readmodel

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ColumnType is the SQL type of a read-model column. There are few on
// purpose: every value goes through the same canonical Go form on the live
// path (database round trips) and on the rebuild path (memory, then COPY),
// which is what lets a rebuild equal the live tables row for row.
type ColumnType int

// Column types and their canonical Go values.
const (
	Text ColumnType = iota // string, NOT NULL
	Int                    // int64, NOT NULL
	Time                   // time.Time, UTC, microseconds; the zero time is NULL
	JSON                   // []byte holding JSON (jsonb), NOT NULL
)

func (t ColumnType) sql() string {
	switch t {
	case Text:
		return "text NOT NULL"
	case Int:
		return "bigint NOT NULL"
	case Time:
		return "timestamptz"
	case JSON:
		return "jsonb NOT NULL"
	}
	panic(fmt.Sprintf("readmodel: unknown column type %d", t))
}

// Column is one column of a read-model table.
type Column struct {
	Name string
	Type ColumnType
}

// TableDef describes a read-model table: its columns, how many leading
// columns form the primary key, and extra indexes for the queries.
type TableDef struct {
	Name    string
	Columns []Column
	// Key is the number of leading columns that form the primary key.
	Key int
	// Indexes are column lists of secondary indexes, e.g.
	// "customer_id, placed_at DESC, order_id".
	Indexes []string
}

// Table is a TableDef with the mapping between its rows and a Go type.
type Table[R any] struct {
	TableDef
	// Encode returns r's column values in column order, in canonical form.
	Encode func(r R) []any
	// Decode builds a row from canonical column values.
	Decode func(vals []any) (R, error)
}

// Get returns the row with the given key values, and whether it exists.
func (t *Table[R]) Get(ctx context.Context, rows Rows, key ...any) (R, bool, error) {
	var zero R
	if len(key) != t.Key {
		return zero, false, fmt.Errorf("readmodel: %s: key has %d values, want %d", t.Name, len(key), t.Key)
	}
	vals, ok, err := rows.get(ctx, &t.TableDef, canonicalAll(t.Columns[:t.Key], key))
	if err != nil || !ok {
		return zero, false, err
	}
	r, err := t.Decode(vals)
	if err != nil {
		return zero, false, fmt.Errorf("readmodel: decode %s row: %w", t.Name, err)
	}
	return r, true, nil
}

// Put inserts r or replaces the row with its key.
func (t *Table[R]) Put(ctx context.Context, rows Rows, r R) error {
	vals := t.Encode(r)
	if len(vals) != len(t.Columns) {
		return fmt.Errorf("readmodel: %s: Encode gave %d values for %d columns", t.Name, len(vals), len(t.Columns))
	}
	return rows.put(ctx, &t.TableDef, canonicalAll(t.Columns, vals))
}

// Rows is where a projection reads and writes its rows: the live builder's
// transaction, or a rebuild's in-memory working set. Only this package
// implements it.
type Rows interface {
	get(ctx context.Context, def *TableDef, key []any) ([]any, bool, error)
	put(ctx context.Context, def *TableDef, vals []any) error
}

// canonical brings a value to its column type's canonical Go form.
func canonical(t ColumnType, v any) any {
	switch t {
	case Text:
		if v == nil {
			return ""
		}
	case Int:
		switch n := v.(type) {
		case nil:
			return int64(0)
		case int:
			return int64(n)
		case int32:
			return int64(n)
		}
	case Time:
		switch tv := v.(type) {
		case nil:
			return time.Time{}
		case time.Time:
			if tv.IsZero() {
				return time.Time{}
			}
			return tv.UTC().Truncate(time.Microsecond)
		case *time.Time:
			if tv == nil {
				return time.Time{}
			}
			return canonical(t, *tv)
		}
	case JSON:
		switch b := v.(type) {
		case nil:
			return []byte("null")
		case string:
			return []byte(b)
		}
	}
	return v
}

func canonicalAll(cols []Column, vals []any) []any {
	out := make([]any, len(vals))
	for i, v := range vals {
		out[i] = canonical(cols[i].Type, v)
	}
	return out
}

// dbValue is the value given to PostgreSQL for a canonical value.
func dbValue(t ColumnType, v any) any {
	if t == Time {
		if tv, _ := v.(time.Time); tv.IsZero() {
			return nil
		}
	}
	return v
}

func dbValues(cols []Column, vals []any) []any {
	out := make([]any, len(vals))
	for i, v := range vals {
		out[i] = dbValue(cols[i].Type, v)
	}
	return out
}

// scanDests returns scan destinations for cols and a function that turns
// them into canonical values.
func scanDests(cols []Column) ([]any, func() []any) {
	dests := make([]any, len(cols))
	for i, c := range cols {
		switch c.Type {
		case Text:
			dests[i] = new(string)
		case Int:
			dests[i] = new(int64)
		case Time:
			dests[i] = new(*time.Time)
		case JSON:
			dests[i] = new([]byte)
		}
	}
	return dests, func() []any {
		vals := make([]any, len(cols))
		for i := range cols {
			switch d := dests[i].(type) {
			case *string:
				vals[i] = *d
			case *int64:
				vals[i] = *d
			case **time.Time:
				vals[i] = canonical(Time, *d)
			case *[]byte:
				vals[i] = append([]byte(nil), *d...)
			}
		}
		return vals
	}
}

func (d *TableDef) columnNames() []string {
	names := make([]string, len(d.Columns))
	for i, c := range d.Columns {
		names[i] = c.Name
	}
	return names
}

// qualified is schema.table, quoted.
func (d *TableDef) qualified(schema string) string {
	return pgx.Identifier{schema, d.Name}.Sanitize()
}

// ddl returns the statements that create the table in schema.
func (d *TableDef) ddl(schema string) []string {
	cols := make([]string, len(d.Columns))
	for i, c := range d.Columns {
		cols[i] = pgx.Identifier{c.Name}.Sanitize() + " " + c.Type.sql()
	}
	key := strings.Join(d.columnNames()[:d.Key], ", ")
	stmts := []string{fmt.Sprintf("CREATE TABLE %s (%s, PRIMARY KEY (%s))", d.qualified(schema), strings.Join(cols, ", "), key)}
	for i, idx := range d.Indexes {
		stmts = append(stmts, fmt.Sprintf("CREATE INDEX %s ON %s (%s)",
			pgx.Identifier{fmt.Sprintf("%s_idx%d", d.Name, i)}.Sanitize(), d.qualified(schema), idx))
	}
	return stmts
}

func (d *TableDef) selectSQL(schema string) string {
	where := make([]string, d.Key)
	for i, c := range d.Columns[:d.Key] {
		where[i] = fmt.Sprintf("%s = $%d", pgx.Identifier{c.Name}.Sanitize(), i+1)
	}
	return fmt.Sprintf("SELECT %s FROM %s WHERE %s", strings.Join(quoteAll(d.columnNames()), ", "), d.qualified(schema), strings.Join(where, " AND "))
}

// upsertSQL inserts one row, or replaces the row with its key.
func (d *TableDef) upsertSQL(schema string) string {
	params := make([]string, len(d.Columns))
	for i := range d.Columns {
		params[i] = fmt.Sprintf("$%d", i+1)
	}
	return fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s) %s", d.qualified(schema),
		strings.Join(quoteAll(d.columnNames()), ", "), strings.Join(params, ", "), d.onConflict())
}

func (d *TableDef) onConflict() string {
	names := quoteAll(d.columnNames())
	if d.Key == len(names) {
		return fmt.Sprintf("ON CONFLICT (%s) DO NOTHING", strings.Join(names, ", "))
	}
	sets := make([]string, 0, len(names)-d.Key)
	for _, n := range names[d.Key:] {
		sets = append(sets, n+" = EXCLUDED."+n)
	}
	return fmt.Sprintf("ON CONFLICT (%s) DO UPDATE SET %s", strings.Join(names[:d.Key], ", "), strings.Join(sets, ", "))
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = pgx.Identifier{n}.Sanitize()
	}
	return out
}

// keyString identifies a row in memory by its canonical key values.
func keyString(key []any) string {
	var b strings.Builder
	for i, v := range key {
		if i > 0 {
			b.WriteByte(0)
		}
		switch x := v.(type) {
		case time.Time:
			b.WriteString(x.Format(time.RFC3339Nano))
		case []byte:
			b.Write(x)
		default:
			fmt.Fprint(&b, x)
		}
	}
	return b.String()
}
