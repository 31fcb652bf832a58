package readmodel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/store/pg"
)

// RebuildOptions configure Rebuild.
type RebuildOptions struct {
	// Pool is the projections database (where the copies live).
	Pool *pgxpool.Pool
	// Stores are the event stores of the projection's sources, by context.
	Stores map[string]*pg.Store
	// Registry decodes payloads (default codec.All()).
	Registry *codec.Registry
	// ReadBatch is how many events one store read returns (default 5,000).
	ReadBatch int
	// FlushEvery is how many events are applied between two durable
	// flushes of the new copy and its positions (default 50,000): what a
	// crashed rebuild re-reads at most.
	FlushEvery int
	// MaxRows bounds the rows kept in memory between flushes (default
	// 500,000); past it the working set is dropped after a flush and read
	// back on demand.
	MaxRows int
	// Progress, if set, is called after every batch.
	Progress func(Progress)
	// BeforeSwitch, if set, runs after the copy has caught up and before
	// the switch (tests use it to write more events in between).
	BeforeSwitch func(ctx context.Context) error
	Logger       *slog.Logger
}

// Progress is a rebuild's progress.
type Progress struct {
	Projection string
	Generation int
	Phase      string // "reading", "switching", "done"
	Read       int64  // events read by this copy so far (across resumes)
	Total      int64  // events the copy will have read at the end (estimate)
	Applied    int64  // events read in this run
	Elapsed    time.Duration
}

// Rate is events per second in this run.
func (p Progress) Rate() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Applied) / p.Elapsed.Seconds()
}

// ETA estimates the time left.
func (p Progress) ETA() time.Duration {
	r := p.Rate()
	if r <= 0 || p.Total <= p.Read {
		return 0
	}
	return time.Duration(float64(p.Total-p.Read) / r * float64(time.Second))
}

// ErrRebuildRunning is returned when another rebuild of the projection
// holds its lock.
var ErrRebuildRunning = errors.New("readmodel: a rebuild of this projection is already running")

// Rebuild builds a new copy of p from its sources' event stores (the whole
// history), while the active copy keeps serving and the live builder keeps
// applying to it; then catches up with the stores' tail and makes the new
// copy active in one transaction. It resumes a copy left half-built by a
// crashed rebuild. Nothing is sent anywhere: a rebuild only reads the
// stores and writes the new copy.
func Rebuild(ctx context.Context, p Projection, o RebuildOptions) (Generation, error) {
	o.defaults()
	for _, src := range p.Sources() {
		if o.Stores[src] == nil {
			return Generation{}, fmt.Errorf("readmodel: rebuild %s: no event store for source %q", p.Name(), src)
		}
	}
	if err := Migrate(ctx, o.Pool); err != nil {
		return Generation{}, err
	}
	// One rebuild per projection at a time: a session lock on a held
	// connection, gone with the process if it dies.
	conn, err := o.Pool.Acquire(ctx)
	if err != nil {
		return Generation{}, err
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lockKey("rebuild:"+p.Name())).Scan(&got); err != nil {
		return Generation{}, err
	}
	if !got {
		return Generation{}, fmt.Errorf("%w: %s", ErrRebuildRunning, p.Name())
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey("rebuild:"+p.Name())) //nolint:errcheck

	r := &rebuild{p: p, o: o, start: time.Now()}
	if err := r.open(ctx); err != nil {
		return Generation{}, fmt.Errorf("readmodel: rebuild %s: %w", p.Name(), err)
	}
	if err := r.run(ctx); err != nil {
		return r.gen, fmt.Errorf("readmodel: rebuild %s (copy %s, resumable): %w", p.Name(), r.gen.Schema, err)
	}
	return r.gen, nil
}

func (o *RebuildOptions) defaults() {
	if o.Registry == nil {
		o.Registry = codec.All()
	}
	if o.ReadBatch <= 0 {
		o.ReadBatch = 5000
	}
	if o.FlushEvery <= 0 {
		o.FlushEvery = 50_000
	}
	if o.MaxRows <= 0 {
		o.MaxRows = 500_000
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

type rebuild struct {
	p       Projection
	o       RebuildOptions
	gen     Generation
	pos     map[string]envelope.Position
	mem     *memRows
	read    int64 // events read by the copy, across resumes
	total   int64
	applied int64 // this run
	pending int   // applied since the last flush
	start   time.Time
}

// open finds the copy being built, or starts one.
func (r *rebuild) open(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, r.o.Pool, func(tx pgx.Tx) error {
		g, err := scanGeneration(tx.QueryRow(ctx, `SELECT `+generationCols+` FROM readmodel_generations
WHERE projection = $1 AND state = 'building' FOR UPDATE`, r.p.Name()))
		if errors.Is(err, pgx.ErrNoRows) {
			g, err = createGeneration(ctx, tx, r.p, "building")
		}
		r.gen = g
		return err
	})
	if err != nil {
		return err
	}
	r.pos = map[string]envelope.Position{}
	for ctxName, s := range r.gen.Positions {
		p, err := envelope.ParsePosition(s)
		if err != nil {
			return fmt.Errorf("copy %s: position of %s: %w", r.gen.Schema, ctxName, err)
		}
		r.pos[ctxName] = p
	}
	r.read = r.gen.EventsRead
	r.mem = newMemRows(r.o.Pool, r.gen.Schema, r.read == 0)
	r.total = r.read
	for _, src := range r.p.Sources() {
		n, err := countAfter(ctx, r.o.Stores[src], r.pos[src])
		if err != nil {
			return err
		}
		r.total += n
	}
	if r.read > 0 {
		r.o.Logger.Info("resuming rebuild", "projection", r.p.Name(), "copy", r.gen.Schema, "events_read", r.read)
	}
	return nil
}

func countAfter(ctx context.Context, s *pg.Store, after envelope.Position) (int64, error) {
	var n int64
	err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM events WHERE (tx_id, global_position) > ($1, $2)`, int64(after.Tx), after.Global).Scan(&n)
	return n, err
}

// nextXid is the first transaction id not yet handed out on src's server:
// every event committed so far has a smaller tx_id.
func nextXid(ctx context.Context, s *pg.Store) (int64, error) {
	var x int64
	err := s.Pool().QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&x)
	return x, err
}

// committedAfter reports whether src has committed events after position
// from transactions older than xmax (visible to this query, not yet to
// ReadAll).
func committedAfter(ctx context.Context, s *pg.Store, after envelope.Position, xmax int64) (bool, error) {
	var ok bool
	err := s.Pool().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM events WHERE (tx_id, global_position) > ($1, $2) AND tx_id < $3)`,
		int64(after.Tx), after.Global, xmax).Scan(&ok)
	return ok, err
}

func (r *rebuild) run(ctx context.Context) error {
	sources := slices.Clone(r.p.Sources())
	// Read every store to its head, flushing as we go.
	for _, src := range sources {
		if err := r.drain(ctx, src, func(ctx context.Context) error { return r.flush(ctx, nil) }); err != nil {
			return err
		}
	}
	if err := r.flush(ctx, nil); err != nil {
		return err
	}
	if r.o.BeforeSwitch != nil {
		if err := r.o.BeforeSwitch(ctx); err != nil {
			return err
		}
	}
	r.report("switching")
	// The switch: hold the live builder off, read what the stores gained
	// meanwhile, write it, and make this copy the active one.
	var retired []Generation
	err := pgx.BeginFunc(ctx, r.o.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey(r.p.Name())); err != nil {
			return err
		}
		for _, src := range sources {
			if err := r.drain(ctx, src, nil); err != nil {
				return err
			}
		}
		if err := r.flush(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE readmodel_generations SET state = 'retired', retired_at = now()
WHERE projection = $1 AND state = 'active'`, r.p.Name()); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE readmodel_generations SET state = 'active', activated_at = now()
WHERE projection = $1 AND generation = $2`, r.p.Name(), r.gen.Number); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, r.p.Name()+switchedSuffix); err != nil {
			return err
		}
		// Keep the copy just replaced (to compare or go back to); drop
		// older ones.
		rows, err := tx.Query(ctx, `SELECT `+generationCols+` FROM readmodel_generations
WHERE projection = $1 AND state = 'retired' ORDER BY generation DESC OFFSET 1`, r.p.Name())
		if err != nil {
			return err
		}
		retired, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Generation, error) { return scanGeneration(row) })
		return err
	})
	if err != nil {
		return err
	}
	r.mem.flushed(r.o.MaxRows)
	r.gen.State = "active"
	for _, g := range retired {
		if _, err := r.o.Pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{g.Schema}.Sanitize()+` CASCADE`); err != nil {
			r.o.Logger.Warn("drop old copy", "schema", g.Schema, "err", err)
			continue
		}
		if _, err := r.o.Pool.Exec(ctx, `DELETE FROM readmodel_generations WHERE projection = $1 AND generation = $2`, g.Projection, g.Number); err != nil {
			r.o.Logger.Warn("forget old copy", "schema", g.Schema, "err", err)
		}
	}
	r.report("done")
	return nil
}

// drain applies src's events after the copy's position until the store has
// no more that committed before the drain began, calling flush (if set)
// every FlushEvery events. A reader runs a batch ahead of the fold.
//
// An empty read is not the end by itself: the store hands out only events
// no running transaction on the server can still precede, so committed
// events may be held back for a moment by any other transaction. The drain
// waits for those (the ones from transactions older than its start),
// rather than stop short of them: the switch relies on it to apply
// everything committed before it took the lock.
func (r *rebuild) drain(ctx context.Context, src string, flush func(context.Context) error) error {
	type batch struct {
		evs []envelope.Event
		err error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan batch, 2)
	go func() {
		defer close(batches)
		after := r.pos[src]
		st := r.o.Stores[src]
		xmax, err := nextXid(ctx, st)
		for err == nil {
			var evs []envelope.Event
			evs, err = st.ReadAll(ctx, after, r.o.ReadBatch)
			if err == nil && len(evs) == 0 {
				var held bool
				if held, err = committedAfter(ctx, st, after, xmax); err == nil && held {
					select {
					case <-ctx.Done():
						return
					case <-time.After(2 * time.Millisecond):
						continue
					}
				}
			}
			select {
			case batches <- batch{evs, err}:
			case <-ctx.Done():
				return
			}
			if err != nil || len(evs) == 0 {
				return
			}
			after = evs[len(evs)-1].Position
		}
		select {
		case batches <- batch{err: err}:
		case <-ctx.Done():
		}
	}()
	for b := range batches {
		if b.err != nil {
			return b.err
		}
		for _, e := range b.evs {
			msg, err := r.o.Registry.Decode(e.Type, e.Payload)
			if err != nil {
				return fmt.Errorf("%s event %s (%s): %w", src, e.ID, e.Type, err)
			}
			if _, err := apply(ctx, r.p, r.mem, Event{Event: e, Context: src, Message: msg}); err != nil {
				return err
			}
			r.pos[src] = e.Position
		}
		n := len(b.evs)
		r.read += int64(n)
		r.applied += int64(n)
		r.pending += n
		if r.read > r.total {
			r.total = r.read
		}
		r.report("reading")
		if flush != nil && r.pending >= r.o.FlushEvery {
			if err := flush(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush writes the working set and the positions: in tx if given (the
// switch), else in a transaction of its own, committed.
func (r *rebuild) flush(ctx context.Context, tx pgx.Tx) error {
	write := func(tx pgx.Tx) error {
		if err := r.mem.flush(ctx, tx); err != nil {
			return err
		}
		pos := make(map[string]string, len(r.pos))
		for k, v := range r.pos {
			pos[k] = v.String()
		}
		tag, err := tx.Exec(ctx, `UPDATE readmodel_generations SET positions = $1, events_read = $2
WHERE projection = $3 AND generation = $4 AND state = 'building'`, pos, r.read, r.p.Name(), r.gen.Number)
		if err == nil && tag.RowsAffected() != 1 {
			err = fmt.Errorf("copy %s is no longer being built", r.gen.Schema)
		}
		return err
	}
	if tx != nil {
		return write(tx)
	}
	if err := pgx.BeginFunc(ctx, r.o.Pool, write); err != nil {
		return err
	}
	r.mem.flushed(r.o.MaxRows)
	r.pending = 0
	return nil
}

func (r *rebuild) report(phase string) {
	if r.o.Progress == nil {
		return
	}
	r.o.Progress(Progress{Projection: r.p.Name(), Generation: r.gen.Number, Phase: phase,
		Read: r.read, Total: r.total, Applied: r.applied, Elapsed: time.Since(r.start)})
}
