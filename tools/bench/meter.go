package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Process groups that are not the measured system's: reported, but left
// out of its CPU per checkout.
const (
	groupForeignDB    = "pg_other_databases" // backends of other databases (other tests)
	groupUnattributed = "pg_unattributed"    // backends that ended before a sample saw their database
	groupBench        = "bench_client"       // this process: the shoppers
)

// notSystem says whether a CPU group is left out of the system's total.
func notSystem(g string) bool {
	return g == groupForeignDB || g == groupUnattributed || g == groupBench
}

// procStat is one /proc/<pid>/stat: parent, start time (clock ticks since
// boot: with the pid, it tells a reused pid apart) and CPU seconds.
type procStat struct {
	pid, ppid int
	start     uint64
	cpu       float64
	comm      string
}

func readProcStat(pid string) (procStat, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return procStat{}, false
	}
	return parseProcStat(pid, string(b))
}

// parseProcStat parses a /proc/<pid>/stat line; the command name may hold
// spaces and parentheses, so the fields start after the last ')'.
func parseProcStat(pid, s string) (procStat, bool) {
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < lp {
		return procStat{}, false
	}
	f := strings.Fields(s[rp+1:]) // f[0] is field 3 (state)
	if len(f) < 20 {
		return procStat{}, false
	}
	var p procStat
	p.pid, _ = strconv.Atoi(pid)
	p.ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseFloat(f[11], 64) // utime: field 14
	st, _ := strconv.ParseFloat(f[12], 64) // stime: field 15
	p.cpu = (ut + st) / 100                // USER_HZ
	p.start, _ = strconv.ParseUint(f[19], 10, 64)
	p.comm = s[lp+1 : rp]
	return p, true
}

type procKey struct {
	pid   int
	start uint64
}

type procCPU struct {
	group       string
	first, last float64
}

// meter samples, every interval while a run goes on, the CPU of every
// process of the system under test by group: each Keel binary by name,
// the bench broker's JVM, PostgreSQL's backends by database (the
// database from pg_stat_activity, else from the backend's process title)
// and its postmaster and background processes ("postgres_other"). A
// process first seen after the first sample counts from zero; one that
// ends between samples loses its last interval.
type meter struct {
	r          *running
	b          *broker
	conn       *pgx.Conn
	postmaster int
	keel       map[int]string
	procs      map[procKey]*procCPU
	samples    int
	busy0      int64
	t0         time.Time
	stopc      chan struct{}
	done       chan struct{}
	mu         sync.Mutex
	err        error
}

func newMeter(ctx context.Context, r *running, b *broker) (*meter, error) {
	conn, err := pgx.Connect(ctx, pgURL())
	if err != nil {
		return nil, err
	}
	var backend int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	p, ok := readProcStat(strconv.Itoa(backend))
	if !ok {
		conn.Close(ctx)
		return nil, fmt.Errorf("PostgreSQL's backend %d is not in this machine's /proc: the checkout bench needs the server on this machine", backend)
	}
	return &meter{r: r, b: b, conn: conn, postmaster: p.ppid, keel: r.pids(), procs: map[procKey]*procCPU{}}, nil
}

// start takes the first sample and samples every interval until finish.
func (m *meter) start(ctx context.Context, interval time.Duration) error {
	m.busy0, m.t0 = busyJiffies(), time.Now()
	if err := m.sample(ctx); err != nil {
		return err
	}
	m.stopc, m.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(m.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-m.stopc:
				return
			case <-t.C:
				if err := m.sample(ctx); err != nil {
					m.mu.Lock()
					m.err = err
					m.mu.Unlock()
					return
				}
			}
		}
	}()
	return nil
}

// finish takes the last sample and returns CPU seconds by group, the
// machine's busy CPU seconds (/proc/stat) and the wall time.
func (m *meter) finish(ctx context.Context) (map[string]float64, float64, time.Duration, error) {
	close(m.stopc)
	<-m.done
	if m.err != nil {
		return nil, 0, 0, m.err
	}
	if err := m.sample(ctx); err != nil {
		return nil, 0, 0, err
	}
	busy := float64(busyJiffies()-m.busy0) / 100
	out := map[string]float64{}
	for _, p := range m.procs {
		out[p.group] += p.last - p.first
	}
	return out, busy, time.Since(m.t0), nil
}

func (m *meter) close() { _ = m.conn.Close(context.Background()) }

func (m *meter) sample(ctx context.Context) error {
	rows, err := m.conn.Query(ctx, `SELECT pid, coalesce(datname, '') FROM pg_stat_activity`)
	if err != nil {
		return fmt.Errorf("pg_stat_activity: %w", err)
	}
	dbOf := map[int]string{}
	for rows.Next() {
		var pid int
		var db string
		if err := rows.Scan(&pid, &db); err != nil {
			return err
		}
		dbOf[pid] = db
	}
	if err := rows.Err(); err != nil {
		return err
	}
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	self, bpid := os.Getpid(), m.b.pid()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range dirs {
		if d.Name()[0] < '0' || d.Name()[0] > '9' {
			continue
		}
		p, ok := readProcStat(d.Name())
		if !ok {
			continue
		}
		group := ""
		switch {
		case m.keel[p.pid] != "":
			group = m.keel[p.pid]
		case p.pid == bpid:
			group = "kafka_broker"
		case p.pid == self:
			group = groupBench
		case p.pid == m.postmaster:
			group = "postgres_other"
		case p.ppid == m.postmaster:
			group = m.pgGroup(p.pid, dbOf)
		default:
			continue
		}
		k := procKey{p.pid, p.start}
		pc := m.procs[k]
		if pc == nil {
			pc = &procCPU{group: group}
			if m.samples == 0 {
				pc.first = p.cpu
			}
			m.procs[k] = pc
		} else if group != groupUnattributed {
			pc.group = group
		}
		pc.last = p.cpu
	}
	m.samples++
	return nil
}

// pgGroup names a PostgreSQL child process's group: its database when it
// is one of the system's, postgres_other for processes of no database
// (checkpointer, WAL writer, autovacuum launcher...), groupForeignDB for
// other databases' backends.
func (m *meter) pgGroup(pid int, dbOf map[int]string) string {
	db, ok := dbOf[pid]
	if !ok {
		// Not in pg_stat_activity (yet, or no more, or the logger).
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if err != nil {
			return groupUnattributed
		}
		return titleGroup(strings.TrimRight(string(b), "\x00"), m.r.prefix)
	}
	switch {
	case db == "":
		return "postgres_other"
	case strings.HasPrefix(db, m.r.prefix):
		return "postgres_" + strings.TrimPrefix(db, m.r.prefix)
	default:
		return groupForeignDB
	}
}

// titleGroup is the group of a PostgreSQL process from its title: a
// backend's reads "postgres: <cluster>: <user> <database> <host(port)>
// <state>", a background process's has no client address.
func titleGroup(title, prefix string) string {
	for _, f := range strings.Fields(title) {
		if strings.HasPrefix(f, prefix) {
			return "postgres_" + strings.TrimPrefix(f, prefix)
		}
	}
	if strings.Contains(title, "(") {
		return groupForeignDB
	}
	return "postgres_other"
}

// counters are what the system's databases and the broker counted at one
// moment.
type counters struct {
	commits   map[string]int64 // pg_stat_database.xact_commit by database key
	events    int64            // rows in the system's event stores
	published int64            // keel_relay_published_total, every relay
	// end offsets: the system's topics, __consumer_offsets, __transaction_state
	topicEnds, offsetCommits, txnState int64
}

func readCounters(ctx context.Context, r *running, b *broker) (counters, error) {
	c := counters{commits: map[string]int64{}}
	conn, err := pgx.Connect(ctx, pgURL())
	if err != nil {
		return c, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT datname, xact_commit FROM pg_stat_database WHERE starts_with(datname, $1)`, r.prefix)
	if err != nil {
		return c, fmt.Errorf("pg_stat_database: %w", err)
	}
	for rows.Next() {
		var db string
		var n int64
		if err := rows.Scan(&db, &n); err != nil {
			return c, err
		}
		c.commits[strings.TrimPrefix(db, r.prefix)] = n
	}
	if err := rows.Err(); err != nil {
		return c, err
	}
	for _, ctxName := range relayContexts {
		n, err := storeRows(ctx, r.dbURL(ctxName))
		if err != nil {
			return c, fmt.Errorf("%s store: %w", ctxName, err)
		}
		c.events += n
	}
	for _, u := range r.metrics {
		n, err := scrapeSum(ctx, u, "keel_relay_published_total")
		if err != nil {
			return c, err
		}
		c.published += int64(n)
	}
	c.topicEnds, c.offsetCommits, c.txnState, err = b.offsets(ctx)
	return c, err
}

// storeRows counts an event store's events (0 where there is no store).
func storeRows(ctx context.Context, url string) (int64, error) {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, err
	}
	defer c.Close(context.Background())
	var exists bool
	if err := c.QueryRow(ctx, `SELECT to_regclass('events') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return 0, err
	}
	var n int64
	err = c.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n)
	return n, err
}

// scrapeSum sums the samples of a Prometheus metric on a /metrics page.
func scrapeSum(ctx context.Context, url, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, err
	}
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("%s on %s: %w", name, url, err)
		}
		sum += v
	}
	return sum, nil
}
