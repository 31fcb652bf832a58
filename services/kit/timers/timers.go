// Package timers fires a service's durable timers: rows of a table (kept by
// the service, in its own transactions) that are due at due_at. One Queue
// runs the loop every timer table shares:
//
//   - claim: a batch of due rows, oldest first, locked with FOR UPDATE SKIP
//     LOCKED and leased (retry_at = now + Lease, attempts + 1) in one short
//     statement, so replicas firing the same table take disjoint rows and a
//     process that dies mid-batch leaves its rows to another after the
//     lease;
//   - fire: the service's Fire for each, in due order; Fire decides what a
//     refusal means (drop the row, mark it, reschedule it) and returns nil;
//   - settle: a row that fired has its lease cleared (Fire usually deleted
//     it); a row whose Fire failed is backed off, retry_at = now +
//     Backoff·2^(attempts-1) capped at MaxBackoff, with its error kept in
//     last_error and counted in keel_timers_failures_total, and the batch
//     carries on with the next row. A row that keeps failing therefore
//     costs one attempt per back-off, never the timers behind it.
//
// The table needs, besides its key columns and due_at, the columns
//
//	attempts   integer NOT NULL DEFAULT 0
//	retry_at   timestamptz
//	last_error text
//
// added by the service's migration; a row is due when due_at <= now and
// retry_at is NULL or <= now. A writer that re-arms a row should reset
// attempts and retry_at, so a new deadline does not inherit an old
// back-off.
package timers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config.
const (
	DefaultBatch      = 1000
	DefaultLease      = time.Minute
	DefaultBackoff    = time.Second
	DefaultMaxBackoff = 5 * time.Minute
)

// Timer is a claimed due row.
type Timer struct {
	// Key holds the values of Config.Key, in order.
	Key []string
	// Data holds the values of Config.Data, in order, as text.
	Data []string
	// Due is the row's due_at.
	Due time.Time
	// Attempts counts the claims of the row so far, this one included.
	Attempts int
}

// Fire runs a due timer. It returns whether it fired (for the caller's
// count: a replayed or already decided command is not a firing) and an
// error only when the timer should be tried again later. It must be
// idempotent: a row whose claimer died, or outlived its lease, fires
// again.
type Fire func(ctx context.Context, t Timer) (fired bool, err error)

// Config describes a timer table and how to fire it.
type Config struct {
	// Name labels the metrics and logs ("cart_abandon").
	Name string
	// Table is the timer table.
	Table string
	// Key lists the table's text primary-key columns.
	Key []string
	// Data lists further columns (or SQL expressions) handed to Fire as
	// text.
	Data []string
	// Where, when set, is an SQL condition a row must also meet to be due
	// ("fired_at IS NULL").
	Where string
	// Fire runs a due timer.
	Fire Fire
	// Now is the clock (default time.Now); due, lease and back-off are
	// measured on it.
	Now func() time.Time
	// Batch is the most rows one FireDue claims (DefaultBatch).
	Batch int
	// Lease is how long a claimed row stays hidden from other replicas
	// before it is due again if its claimer dies (DefaultLease).
	Lease time.Duration
	// Backoff is the delay after a row's first failure, doubled at each
	// further one up to MaxBackoff (DefaultBackoff, DefaultMaxBackoff).
	Backoff, MaxBackoff time.Duration
	Logger              *slog.Logger
	// Registerer, when set, receives the keel_timers_* metrics.
	Registerer prometheus.Registerer
}

// Queue fires the due rows of one timer table. Safe for concurrent use,
// in one process or many.
type Queue struct {
	cfg  Config
	pool *pgxpool.Pool
	m    *metrics
	log  *slog.Logger

	claim, settle, fail, release, backlog string
}

// New returns the queue of cfg.Table on pool (already migrated).
func New(pool *pgxpool.Pool, cfg Config) (*Queue, error) {
	switch {
	case pool == nil:
		return nil, errors.New("timers: nil pool")
	case cfg.Name == "" || cfg.Table == "" || len(cfg.Key) == 0 || cfg.Fire == nil:
		return nil, fmt.Errorf("timers %q: name, table, key and fire are required", cfg.Name)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.Backoff {
		return nil, fmt.Errorf("timers %s: MaxBackoff %s below Backoff %s", cfg.Name, cfg.MaxBackoff, cfg.Backoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Name, cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("timers %s: metrics: %w", cfg.Name, err)
	}
	q := &Queue{cfg: cfg, pool: pool, m: m, log: cfg.Logger.With("timers", cfg.Name)}
	q.build()
	return q, nil
}

// build writes the queue's statements once. Names come from code, not
// input; they are quoted all the same.
func (q *Queue) build() {
	c := q.cfg
	t := pgx.Identifier{c.Table}.Sanitize()
	keys := make([]string, len(c.Key))
	match := make([]string, len(c.Key)) // claimed row = locked row
	byKey := make([]string, len(c.Key)) // the row of a Timer's key
	for i, k := range c.Key {
		keys[i] = "t." + pgx.Identifier{k}.Sanitize()
		match[i] = fmt.Sprintf("%s = d.%s", keys[i], pgx.Identifier{k}.Sanitize())
		byKey[i] = fmt.Sprintf("%s = $%d", pgx.Identifier{k}.Sanitize(), i+1)
	}
	returning := slices.Clone(keys)
	for _, d := range c.Data {
		returning = append(returning, "("+d+")::text")
	}
	due := "t.due_at <= $1 AND (t.retry_at IS NULL OR t.retry_at <= $1)" + andWhere(c.Where)
	n := len(keys)
	// The subquery's rows are locked, skipping those another claimer or
	// writer holds, and the outer UPDATE leases them: the claim never waits.
	q.claim = fmt.Sprintf(`UPDATE %[1]s t SET retry_at = $2, attempts = t.attempts + 1
FROM (SELECT %[2]s FROM %[1]s t WHERE %[3]s ORDER BY t.due_at LIMIT $3 FOR UPDATE OF t SKIP LOCKED) d
WHERE %[4]s
RETURNING %[5]s, t.due_at, t.attempts`,
		t, strings.Join(keys, ", "), due, strings.Join(match, " AND "), strings.Join(returning, ", "))
	// Only the lease this claim took is cleared or replaced: a row re-armed
	// meanwhile (retry_at reset by its writer) is left as it was written.
	q.settle = fmt.Sprintf(`UPDATE %s SET retry_at = NULL, attempts = 0, last_error = NULL WHERE %s AND retry_at = $%d`,
		t, strings.Join(byKey, " AND "), n+1)
	q.fail = fmt.Sprintf(`UPDATE %s SET retry_at = $%d, last_error = $%d WHERE %s AND retry_at = $%d`,
		t, n+2, n+3, strings.Join(byKey, " AND "), n+1)
	q.release = fmt.Sprintf(`UPDATE %s SET retry_at = NULL, attempts = attempts - 1 WHERE %s AND retry_at = $%d`,
		t, strings.Join(byKey, " AND "), n+1)
	q.backlog = fmt.Sprintf(`SELECT count(*), min(t.due_at) FROM %s t WHERE t.due_at <= $1%s`, t, andWhere(c.Where))
}

func andWhere(w string) string {
	if w == "" {
		return ""
	}
	return " AND (" + w + ")"
}

// FireDue claims the rows due at the clock's now (at most Batch), fires
// them in due order and returns how many fired. A failing row is backed
// off and the rest carry on; the error is for the claim itself (the
// database is unreachable) or ctx ending.
func (q *Queue) FireDue(ctx context.Context) (int, error) {
	now := q.cfg.Now()
	// Microseconds, as stored: settling matches the lease by equality.
	lease := now.Add(q.cfg.Lease).Truncate(time.Microsecond)
	list, err := q.claimDue(ctx, now, lease)
	if err != nil {
		return 0, err
	}
	fired := 0
	for i, t := range list {
		if ctx.Err() != nil {
			q.releaseAll(ctx, list[i:], lease)
			return fired, ctx.Err()
		}
		ok, err := q.cfg.Fire(ctx, t)
		if err != nil {
			if ctx.Err() != nil {
				q.releaseAll(ctx, list[i:], lease)
				return fired, ctx.Err()
			}
			q.backOff(ctx, t, lease, err)
			continue
		}
		if ok {
			fired++
			q.m.fired.Inc()
		}
		if _, err := q.pool.Exec(ctx, q.settle, append(args(t.Key), lease)...); err != nil {
			// The row fires again after its lease; Fire is idempotent.
			q.log.WarnContext(ctx, "timers: clear lease", "key", t.Key, "err", err)
		}
	}
	return fired, nil
}

func (q *Queue) claimDue(ctx context.Context, now, lease time.Time) ([]Timer, error) {
	rows, err := q.pool.Query(ctx, q.claim, now, lease, q.cfg.Batch)
	if err != nil {
		return nil, fmt.Errorf("claim due %s: %w", q.cfg.Table, err)
	}
	nk, nd := len(q.cfg.Key), len(q.cfg.Data)
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Timer, error) {
		vals := make([]string, nk+nd)
		dest := make([]any, 0, nk+nd+2)
		for i := range vals {
			dest = append(dest, &vals[i])
		}
		var t Timer
		dest = append(dest, &t.Due, &t.Attempts)
		if err := r.Scan(dest...); err != nil {
			return t, err
		}
		t.Key, t.Data = vals[:nk], vals[nk:]
		return t, nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim due %s: %w", q.cfg.Table, err)
	}
	// RETURNING keeps no order.
	slices.SortStableFunc(list, func(a, b Timer) int { return a.Due.Compare(b.Due) })
	return list, nil
}

// Delay is the back-off after a row's attempts-th failure.
func (q *Queue) Delay(attempts int) time.Duration {
	d := q.cfg.Backoff
	for i := 1; i < attempts && d < q.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, q.cfg.MaxBackoff)
}

func (q *Queue) backOff(ctx context.Context, t Timer, lease time.Time, cause error) {
	q.m.failures.Inc()
	retry := q.cfg.Now().Add(q.Delay(t.Attempts))
	q.log.WarnContext(ctx, "timers: fire failed, backing off", "key", t.Key, "attempts", t.Attempts, "retry_at", retry, "err", cause)
	if _, err := q.pool.Exec(ctx, q.fail, append(args(t.Key), lease, retry, cause.Error())...); err != nil {
		// The lease stands in for the back-off.
		q.log.WarnContext(ctx, "timers: back off", "key", t.Key, "err", err)
	}
}

// releaseAll hands back rows claimed but not fired when ctx ends, so a
// restart does not wait out their lease.
func (q *Queue) releaseAll(ctx context.Context, list []Timer, lease time.Time) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, t := range list {
		if _, err := q.pool.Exec(ctx, q.release, append(args(t.Key), lease)...); err != nil {
			return // their lease runs out on its own
		}
	}
}

func args(key []string) []any {
	out := make([]any, len(key))
	for i, k := range key {
		out[i] = k
	}
	return out
}

// Observe refreshes the backlog gauges: rows due at the clock's now
// (backing-off ones included) and the age of the oldest.
func (q *Queue) Observe(ctx context.Context) error {
	now := q.cfg.Now()
	var n int64
	var oldest *time.Time
	if err := q.pool.QueryRow(ctx, q.backlog, now).Scan(&n, &oldest); err != nil {
		return fmt.Errorf("%s backlog: %w", q.cfg.Table, err)
	}
	q.m.due.Set(float64(n))
	age := 0.0
	if oldest != nil {
		age = now.Sub(*oldest).Seconds()
	}
	q.m.age.Set(age)
	return nil
}

// Run fires due timers and refreshes the gauges every interval (and once
// at start) until ctx ends; a failed round is logged and tried again on
// the next tick.
func (q *Queue) Run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if n, err := q.FireDue(ctx); err != nil && ctx.Err() == nil {
			q.log.WarnContext(ctx, "timers: fire", "err", err)
		} else if n > 0 {
			q.log.InfoContext(ctx, "timers: fired", "count", n)
		}
		if err := q.Observe(ctx); err != nil && ctx.Err() == nil {
			q.log.WarnContext(ctx, "timers: backlog", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
