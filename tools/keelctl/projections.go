package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/keel-commerce/keel/projections/readmodel"
)

// storeURLs is --store CONTEXT=URL, repeatable: where a source context's
// event store is when it is not keel_<context> on KEEL_PG_URL.
type storeURLs map[string]string

func (s storeURLs) String() string { return fmt.Sprint(map[string]string(s)) }

func (s storeURLs) Set(v string) error {
	ctxName, u, ok := strings.Cut(v, "=")
	if !ok || ctxName == "" || u == "" {
		return fmt.Errorf("want CONTEXT=URL, got %q", v)
	}
	s[ctxName] = u
	return nil
}

// projectionFlags are the flags both projections commands take.
type projectionFlags struct {
	json   *bool
	dbURL  *string
	stores storeURLs
}

func addProjectionFlags(fs *flag.FlagSet) *projectionFlags {
	f := &projectionFlags{
		json:   fs.Bool("json", false, "JSON lines"),
		dbURL:  fs.String("projections-database-url", "", "the projections database (default: KEEL_PG_URL with database keel_projections)"),
		stores: storeURLs{},
	}
	fs.Var(f.stores, "store", "CONTEXT=URL: a source context's event store (default: KEEL_PG_URL with database keel_<context>); repeatable")
	return f
}

// openPool opens and pings a pool on dsn; what names the database in errors.
func openPool(ctx context.Context, dsn, what string) (*pgxpool.Pool, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, redact(dsn), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s %s: %w", what, redact(dsn), err)
	}
	return pool, nil
}

func (f *projectionFlags) openProjections(ctx context.Context, e *env) (*pgxpool.Pool, error) {
	dsn, err := e.databaseURL(*f.dbURL, "keel_projections")
	if err != nil {
		return nil, err
	}
	return openPool(ctx, dsn, "projections database")
}

// openStores opens the event stores of contexts; close releases them.
func (f *projectionFlags) openStores(ctx context.Context, e *env, contexts []string) (stores map[string]*pg.Store, close func(), err error) {
	stores = map[string]*pg.Store{}
	var pools []*pgxpool.Pool
	close = func() {
		for _, st := range stores {
			st.Close()
		}
		for _, p := range pools {
			p.Close()
		}
	}
	for _, c := range contexts {
		if stores[c] != nil {
			continue
		}
		st, pool, err := openStore(ctx, e, c, f.stores[c])
		if err != nil {
			close()
			return nil, nil, fmt.Errorf("source %s: %w", c, err)
		}
		stores[c], pools = st, append(pools, pool)
	}
	return stores, close, nil
}

// statusJSON is one projection's status as `projections status --json`
// prints it.
type statusJSON struct {
	Projection string         `json:"projection"`
	Known      bool           `json:"known"`
	Group      string         `json:"group"`
	Active     *copyJSON      `json:"active,omitempty"`
	Building   *copyJSON      `json:"building,omitempty"`
	Lag        *lagJSON       `json:"lag,omitempty"`
	Topics     []topicLagJSON `json:"topics,omitempty"`
}

type copyJSON struct {
	Schema      string            `json:"schema"`
	Generation  int               `json:"generation"`
	CreatedAt   string            `json:"created_at"`
	ActivatedAt string            `json:"activated_at,omitempty"`
	EventsRead  int64             `json:"events_read"`
	Total       *int64            `json:"events_total,omitempty"`
	Positions   map[string]string `json:"positions,omitempty"`
}

type lagJSON struct {
	Events  int64   `json:"events"`
	Seconds float64 `json:"seconds"`
	Oldest  string  `json:"oldest_unapplied,omitempty"`
	Unknown bool    `json:"age_unknown,omitempty"`
	// MissingTopics are source topics the broker does not have.
	MissingTopics []string `json:"missing_topics,omitempty"`
}

type topicLagJSON struct {
	Topic      string          `json:"topic"`
	Events     int64           `json:"events"`
	Oldest     string          `json:"oldest_unapplied,omitempty"`
	Unknown    bool            `json:"age_unknown,omitempty"`
	Partitions []partitionJSON `json:"partitions"`
}

type partitionJSON struct {
	Partition    int32  `json:"partition"`
	Next         int64  `json:"checkpoint"`
	Checkpointed bool   `json:"checkpointed"`
	End          int64  `json:"end"`
	Events       int64  `json:"events"`
	Oldest       string `json:"oldest_unapplied,omitempty"`
	Unknown      bool   `json:"age_unknown,omitempty"`
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func copyOf(g readmodel.Generation) *copyJSON {
	return &copyJSON{Schema: g.Schema, Generation: g.Number, CreatedAt: timeString(g.CreatedAt),
		ActivatedAt: timeString(g.ActivatedAt), EventsRead: g.EventsRead, Positions: g.Positions}
}

func toStatusJSON(s readmodel.Status) statusJSON {
	j := statusJSON{Projection: s.Projection, Known: s.Known, Group: s.Group}
	if s.Active != nil {
		j.Active = copyOf(*s.Active)
	}
	if s.Building != nil {
		j.Building = copyOf(s.Building.Generation)
		if s.Building.Total >= 0 {
			j.Building.Total = &s.Building.Total
		}
	}
	if s.Lag != nil {
		j.Lag = &lagJSON{Events: s.Lag.Events, Seconds: s.Lag.Seconds, Oldest: timeString(s.Lag.Oldest), Unknown: s.Lag.Unknown,
			MissingTopics: s.Lag.MissingTopics}
		for _, t := range s.Lag.TopicLag() {
			tj := topicLagJSON{Topic: t.Topic, Events: t.Events, Oldest: timeString(t.Oldest), Unknown: t.Unknown, Partitions: []partitionJSON{}}
			for _, p := range s.Lag.Partitions {
				if p.Topic == t.Topic {
					tj.Partitions = append(tj.Partitions, partitionJSON{Partition: p.Partition, Next: p.Next, Checkpointed: p.Checkpointed,
						End: p.End, Events: p.Events, Oldest: timeString(p.Oldest), Unknown: p.Unknown})
				}
			}
			j.Topics = append(j.Topics, tj)
		}
	}
	return j
}

func projectionsStatus(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("projections status", flag.ContinueOnError)
	f := addProjectionFlags(fs)
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	pool, err := f.openProjections(ctx, e)
	if err != nil {
		return err
	}
	defer pool.Close()
	ps := e.projections()
	// The stores are read only for the totals of copies being built.
	building, err := buildingProjections(ctx, pool)
	if err != nil {
		return err
	}
	var sources []string
	for _, p := range ps {
		if slices.Contains(building, p.Name()) {
			sources = append(sources, p.Sources()...)
		}
	}
	stores := map[string]*pg.Store{}
	for _, c := range sources {
		if stores[c] != nil {
			continue
		}
		st, spool, err := openStore(ctx, e, c, f.stores[c])
		if err != nil {
			fmt.Fprintf(e.errOut, "keelctl: the total of a copy being built is unknown: source %s: %v\n", c, err)
			continue
		}
		defer spool.Close()
		defer st.Close()
		stores[c] = st
	}
	prefix := e.topicPrefix()
	statuses, err := readmodel.Statuses(ctx, readmodel.StatusOptions{Pool: pool, Projections: ps, Brokers: e.brokers(), Stores: stores,
		TopicOf: func(c string) string { return prefix + topics.Events(c) },
		GroupOf: func(p string) string { return prefix + readmodel.Group(p) }})
	if err != nil {
		return err
	}
	if *f.json {
		for _, s := range statuses {
			if err := jsonLine(e.out, toStatusJSON(s)); err != nil {
				return err
			}
		}
		return nil
	}
	printStatus(e.out, statuses)
	return nil
}

// buildingProjections names the projections with a copy being built.
func buildingProjections(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('readmodel_generations') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	rows, err := pool.Query(ctx, `SELECT projection FROM readmodel_generations WHERE state = 'building'`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func printStatus(w io.Writer, statuses []readmodel.Status) {
	if len(statuses) == 0 {
		fmt.Fprintln(w, "no projections: none has a copy yet and this keelctl knows none")
		return
	}
	t := newTable(w, "PROJECTION", "ACTIVE", "ACTIVATED", "BUILDING", "LAG EVENTS", "LAG")
	for _, s := range statuses {
		active, activated := "-", "-"
		if s.Active != nil {
			active = s.Active.Schema
			activated = s.Active.ActivatedAt.UTC().Format(time.RFC3339)
		}
		building := "-"
		if b := s.Building; b != nil {
			building = fmt.Sprintf("%s %d events read", b.Schema, b.EventsRead)
			if b.Total >= 0 {
				building = fmt.Sprintf("%s %d/%d events (%.1f%%)", b.Schema, b.EventsRead, b.Total, percent(b.EventsRead, b.Total))
			}
		}
		events, age := "-", "-"
		if s.Lag != nil {
			events, age = strconv.FormatInt(s.Lag.Events, 10), ageText(s.Lag.Seconds, !s.Lag.Oldest.IsZero(), s.Lag.Unknown)
		}
		t.row(s.Projection, active, activated, building, events, age)
	}
	t.flush()
	fmt.Fprintln(w)
	t = newTable(w, "PROJECTION", "GROUP", "TOPIC", "CHECKPOINTS", "END", "LAG EVENTS", "LAG")
	rows := 0
	for _, s := range statuses {
		if s.Lag == nil {
			continue
		}
		for _, tl := range s.Lag.TopicLag() {
			age := "caught up"
			if !tl.Oldest.IsZero() {
				age = ageText(time.Since(tl.Oldest).Seconds(), true, tl.Unknown)
			} else if tl.Unknown {
				age = "unknown"
			}
			t.row(s.Projection, s.Group, tl.Topic, strconv.FormatInt(tl.Next, 10), strconv.FormatInt(tl.End, 10),
				strconv.FormatInt(tl.Events, 10), age)
			rows++
		}
		for _, m := range s.Lag.MissingTopics {
			t.row(s.Projection, s.Group, m, "-", "-", "-", "no such topic")
			rows++
		}
	}
	if rows > 0 {
		t.flush()
		fmt.Fprintln(w, "lag in events counts Kafka transaction markers too: an upper bound (a caught-up builder may show a few)")
	}
}

// ageText renders a lag in seconds: "caught up", "3.2s", or "unknown".
func ageText(seconds float64, behind, unknown bool) string {
	switch {
	case behind && unknown:
		return fmt.Sprintf("≥%s", time.Duration(seconds*float64(time.Second)).Round(100*time.Millisecond))
	case behind:
		return time.Duration(seconds * float64(time.Second)).Round(100 * time.Millisecond).String()
	case unknown:
		return "unknown"
	}
	return "caught up"
}

func percent(n, total int64) float64 {
	if total <= 0 {
		return 100
	}
	return min(100*float64(n)/float64(total), 100)
}

// rebuildJSON is the result of `projections rebuild --json`.
type rebuildJSON struct {
	Projection string  `json:"projection"`
	Schema     string  `json:"schema"`
	Generation int     `json:"generation"`
	Resumed    bool    `json:"resumed"`
	EventsRead int64   `json:"events_read"`
	ThisRun    int64   `json:"events_this_run"`
	Seconds    float64 `json:"seconds"`
	Rate       float64 `json:"events_per_second"`
}

func projectionsRebuild(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("projections rebuild", flag.ContinueOnError)
	f := addProjectionFlags(fs)
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	name := pos[0]
	ps := e.projections()
	var p readmodel.Projection
	names := make([]string, 0, len(ps))
	for _, q := range ps {
		names = append(names, q.Name())
		if q.Name() == name {
			p = q
		}
	}
	if p == nil {
		sort.Strings(names)
		known := strings.Join(names, ", ")
		if known == "" {
			known = "none"
		}
		return fmt.Errorf("%w: no projection %q (known: %s)", errNotFound, name, known)
	}
	pool, err := f.openProjections(ctx, e)
	if err != nil {
		return err
	}
	defer pool.Close()
	stores, closeStores, err := f.openStores(ctx, e, p.Sources())
	if err != nil {
		return err
	}
	defer closeStores()

	resume, err := buildingCopy(ctx, pool, name)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("rebuild %s from the event stores of %s into a new copy, then switch it in", name, strings.Join(p.Sources(), ", "))
	if resume != nil {
		what = fmt.Sprintf("resume the rebuild of %s into copy %s (%d events read before), then switch it in", name, resume.Schema, resume.EventsRead)
	}
	if !*yes {
		if !e.inTerminal {
			return fmt.Errorf("%w: would %s; pass --yes to run without a terminal", errRefused, what)
		}
		fmt.Fprintf(e.errOut, "%s? [y/N] ", strings.ToUpper(what[:1])+what[1:])
		answer, _ := bufio.NewReader(e.in).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return fmt.Errorf("%w: not confirmed", errRefused)
		}
	}
	if resume != nil {
		fmt.Fprintf(e.errOut, "resuming copy %s of %s: %d events were read before it stopped\n", resume.Schema, name, resume.EventsRead)
	} else {
		fmt.Fprintf(e.errOut, "rebuilding %s from %s (resumable: if it stops, run the same command again)\n", name, strings.Join(p.Sources(), ", "))
	}
	bar := newProgressBar(e.errOut, e.errTerminal)
	start := time.Now()
	g, err := readmodel.Rebuild(ctx, p, readmodel.RebuildOptions{Pool: pool, Stores: stores, Progress: bar.update})
	bar.finish()
	var last readmodel.Progress
	if bar.seen {
		last = bar.last
	}
	if err != nil {
		if errors.Is(err, readmodel.ErrRebuildRunning) {
			return fmt.Errorf("%w: %v", errRefused, err)
		}
		if g.Schema != "" {
			return fmt.Errorf("%w\nthe copy %s keeps what was flushed (%d events read); run `keelctl projections rebuild %s` again to resume",
				err, g.Schema, last.Read, name)
		}
		return err
	}
	res := rebuildJSON{Projection: name, Schema: g.Schema, Generation: g.Number, Resumed: resume != nil,
		EventsRead: last.Read, ThisRun: last.Applied, Seconds: time.Since(start).Seconds(), Rate: last.Rate()}
	if *f.json {
		return jsonLine(e.out, res)
	}
	fmt.Fprintf(e.out, "rebuilt %s: copy %s (generation %d) is active; %d events read (%d in this run) in %s, %.0f events/s\n",
		name, g.Schema, g.Number, res.EventsRead, res.ThisRun, time.Since(start).Round(time.Millisecond), res.Rate)
	return nil
}

// buildingCopy is the projection's copy being built, if any (a rebuild
// that stopped and will resume).
func buildingCopy(ctx context.Context, pool *pgxpool.Pool, name string) (*readmodel.Generation, error) {
	if err := readmodel.Migrate(ctx, pool); err != nil {
		return nil, err
	}
	gens, err := readmodel.Generations(ctx, pool)
	if err != nil {
		return nil, err
	}
	for _, g := range gens {
		if g.Projection == name && g.State == "building" {
			return &g, nil
		}
	}
	return nil, nil
}

// progressBar draws a rebuild's progress on one line: redrawn in place
// (\r) on a terminal at most 10 times a second, else a line every
// progressEvery and on each change of phase.
type progressBar struct {
	w        io.Writer
	terminal bool
	every    time.Duration
	lastDraw time.Time
	phase    string
	width    int  // of the last line drawn in place
	seen     bool // a progress was reported
	dirty    bool // the last one reported is not drawn
	last     readmodel.Progress
}

const progressEvery = 5 * time.Second

func newProgressBar(w io.Writer, terminal bool) *progressBar {
	b := &progressBar{w: w, terminal: terminal, every: progressEvery}
	if terminal {
		b.every = 100 * time.Millisecond
	}
	return b
}

func (b *progressBar) update(p readmodel.Progress) {
	if b.phase == "switching" && p.Phase == "reading" {
		p.Phase = "switching" // the switch reads what the stores gained meanwhile
	}
	b.seen, b.last, b.dirty = true, p, true
	now := time.Now()
	if p.Phase == b.phase && now.Sub(b.lastDraw) < b.every {
		return
	}
	b.phase, b.lastDraw = p.Phase, now
	b.draw(p)
}

func (b *progressBar) draw(p readmodel.Progress) {
	b.dirty = false
	line := progressLine(p)
	if !b.terminal {
		fmt.Fprintln(b.w, line)
		return
	}
	pad := ""
	if n := len([]rune(line)); n < b.width {
		pad = strings.Repeat(" ", b.width-n)
	}
	b.width = len([]rune(line))
	fmt.Fprint(b.w, "\r"+line+pad)
}

// finish draws the last state and ends the line.
func (b *progressBar) finish() {
	if !b.seen {
		return
	}
	if b.dirty {
		b.draw(b.last)
	}
	if b.terminal {
		fmt.Fprintln(b.w)
	}
}

// progressLine is e.g. "order_history copy 3 [#####     ]  52.1%  1200/2303 events  48210 events/s  ETA 0s  reading".
func progressLine(p readmodel.Progress) string {
	const width = 24
	pct := percent(p.Read, p.Total)
	filled := int(pct / 100 * width)
	bar := strings.Repeat("#", filled) + strings.Repeat(".", width-filled)
	eta := "-"
	if r := p.Rate(); r > 0 {
		eta = p.ETA().Round(time.Second).String()
	}
	return fmt.Sprintf("%s copy %d [%s] %5.1f%%  %d/%d events  %.0f events/s  ETA %s  %s",
		p.Projection, p.Generation, bar, pct, p.Read, p.Total, p.Rate(), eta, p.Phase)
}
