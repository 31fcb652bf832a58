// Package keyset builds the projections' list queries: filters that a
// zero value leaves out, newest first by (time, id), one page after a
// readmodel.Cursor.
package keyset

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/keel-commerce/keel/projections/readmodel"
)

// Limits of a page.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// Limit is n within 1..MaxLimit, DefaultLimit for n ≤ 0.
func Limit(n int) int {
	switch {
	case n <= 0:
		return DefaultLimit
	case n > MaxLimit:
		return MaxLimit
	}
	return n
}

// Where collects the conditions and arguments of a query.
type Where struct {
	conds []string
	args  []any
}

// Arg adds an argument and returns its placeholder ($n).
func (w *Where) Arg(v any) string {
	w.args = append(w.args, v)
	return fmt.Sprintf("$%d", len(w.args))
}

// Args are the arguments added so far.
func (w *Where) Args() []any { return w.args }

// Add adds a condition; each %s in cond is replaced by a placeholder of
// the next of vals.
func (w *Where) Add(cond string, vals ...any) {
	ph := make([]any, len(vals))
	for i, v := range vals {
		ph[i] = w.Arg(v)
	}
	w.conds = append(w.conds, fmt.Sprintf(cond, ph...))
}

// Eq adds col = v unless v is "".
func (w *Where) Eq(col, v string) {
	if v != "" {
		w.Add(col+" = %s", v)
	}
}

// Range adds from ≤ col < to, each bound left out when zero.
func (w *Where) Range(col string, from, to time.Time) {
	if !from.IsZero() {
		w.Add(col+" >= %s", from)
	}
	if !to.IsZero() {
		w.Add(col+" < %s", to)
	}
}

// SQL is " WHERE c1 AND c2 …", or "" without conditions.
func (w *Where) SQL() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// Newest lists rows of t matching w, newest first by (timeCol, idCol),
// after the cursor, at most limit of them (see Limit), and returns the
// cursor of the next page (zero at the end). cursorOf is a row's position.
func Newest[R any](ctx context.Context, q readmodel.Querier, t *readmodel.Table[R], schema string, w *Where,
	timeCol, idCol string, after readmodel.Cursor, limit int, cursorOf func(R) readmodel.Cursor) ([]R, readmodel.Cursor, error) {
	limit = Limit(limit)
	if after.ID != "" {
		w.Add(fmt.Sprintf("(%s, %s) < (%%s, %%s)", timeCol, idCol), after.At, after.ID)
	}
	sql := readmodel.SelectAll(&t.TableDef, schema) + w.SQL() +
		fmt.Sprintf(" ORDER BY %s DESC, %s DESC LIMIT %s", timeCol, idCol, w.Arg(limit+1))
	list, err := readmodel.Query(ctx, q, t, sql, w.Args()...)
	if err != nil {
		return nil, readmodel.Cursor{}, err
	}
	var next readmodel.Cursor
	if len(list) > limit {
		list = list[:limit]
		next = cursorOf(list[limit-1])
	}
	return list, next, nil
}
