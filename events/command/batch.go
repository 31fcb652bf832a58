package command

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/ksuid"

	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
)

// runBatch decides and stores batch in one transaction. On error nothing
// is stored and no pending result is set.
func (h *Handler[S]) runBatch(ctx context.Context, streams []string, batch []*pending[S]) (err error) {
	start := time.Now()
	for _, p := range batch {
		p.res, p.err = Result{}, nil
	}
	tx, err := h.st.Pool().Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			h.cache.drop(streams)
		}
	}()
	if err := h.st.Lock(ctx, tx, streams...); err != nil {
		return err
	}
	done, err := loadProcessed(ctx, tx, batch)
	if err != nil {
		return err
	}
	states, versions, err := h.load(ctx, tx, streams)
	if err != nil {
		return err
	}

	outs, appends, decided := h.decide(batch, done, states, streams)
	last, err := h.appendEvents(ctx, tx, streams, appends, versions)
	if err != nil {
		return err
	}
	if err := h.record(ctx, tx, outs, done, decided, last); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	committed = true
	for _, s := range streams {
		h.cache.put(s, states[s], versions[s])
	}
	if len(appends) > 0 {
		h.st.Notify()
	}
	h.m.batchSize.Observe(float64(len(batch)))
	h.m.batchSeconds.Observe(time.Since(start).Seconds())
	h.answer(outs, done, decided, versions)
	return nil
}

// outcome is what runBatch decided for one command of its batch.
type outcome[S any] struct {
	p      *pending[S]
	rec    stored
	rej    *Rejection // the domain's own refusal, first time only
	reused *Rejection // the id names another command: not stored
	events int        // events this command appended
	writes func(context.Context, pgx.Tx) error
	stmts  []Statement
}

// decide runs each command of batch not seen before, in arrival order,
// against the states the previous ones left (it applies their events to
// states). decided holds each id's first outcome; outs has room for the
// whole batch, so those pointers into it stay valid.
func (h *Handler[S]) decide(batch []*pending[S], done map[string]stored, states map[string]S, streams []string) ([]outcome[S], map[string][]envelope.Event, map[string]*outcome[S]) {
	outs := make([]outcome[S], 0, len(batch))
	appends := map[string][]envelope.Event{}
	decided := map[string]*outcome[S]{}
	for _, p := range batch {
		if prev, ok := done[p.cmd.ID]; ok {
			outs = append(outs, outcome[S]{p: p, rec: prev, reused: prev.reusedBy(p.cmd.ID, p.digest)})
			continue
		}
		if prev, ok := decided[p.cmd.ID]; ok { // the same id twice in one batch
			outs = append(outs, outcome[S]{p: p, rec: prev.rec, reused: prev.rec.reusedBy(p.cmd.ID, p.digest)})
			continue
		}
		fp := p.cmd.Fingerprint
		o := outcome[S]{p: p, rec: stored{kind: fp.Kind, target: fp.target(p.streams), fingerprint: p.digest}}
		dec, derr := p.cmd.Decide(states)
		var rej *Rejection
		switch {
		case errors.As(derr, &rej):
			o.rec.outcome, o.rec.code, o.rec.detail = "rejected", rej.Code, rej.Detail
			o.rej = rej
		case derr != nil:
			// Not a domain refusal: a bug or bad input the domain did not
			// name. Nothing is stored; the caller sees the error.
			p.err = derr
			continue
		default:
			evs, err := h.toEvents(p.cmd, dec, streams)
			if err != nil {
				p.err = err
				continue
			}
			for s, list := range evs {
				for _, msg := range dec.Events[s] {
					states[s] = h.agg.Apply(states[s], msg)
				}
				appends[s] = append(appends[s], list...)
				o.events += len(list)
			}
			o.rec.outcome, o.rec.response = "accepted", dec.Response
			o.writes = dec.Writes
			o.stmts = dec.Statements
		}
		outs = append(outs, o)
		decided[p.cmd.ID] = &outs[len(outs)-1]
	}
	return outs, appends, decided
}

// appendEvents appends the decided events to every stream in one round trip,
// sets versions to the streams' new ones and returns the last position.
func (h *Handler[S]) appendEvents(ctx context.Context, tx pgx.Tx, streams []string, appends map[string][]envelope.Event, versions map[string]int64) (envelope.Position, error) {
	var last envelope.Position
	var many []pg.StreamAppend
	for _, s := range streams {
		if evs := appends[s]; len(evs) > 0 {
			many = append(many, pg.StreamAppend{Stream: s, Expected: store.Exact(versions[s]), Events: evs})
		}
	}
	if len(many) > 0 {
		results, err := h.st.AppendManyTx(ctx, tx, many)
		if err != nil {
			return envelope.Position{}, err
		}
		for i, res := range results {
			versions[many[i].Stream] = res.Version
			if last.Less(res.Last) {
				last = res.Last
			}
		}
	}
	return last, nil
}

// record runs the accepted commands' writes, then sends their statements
// and the outcomes of the commands decided this time (not replays).
func (h *Handler[S]) record(ctx context.Context, tx pgx.Tx, outs []outcome[S], done map[string]stored, decided map[string]*outcome[S], last envelope.Position) error {
	for i := range outs {
		o := &outs[i]
		if w := o.writes; w != nil {
			if err := w(ctx, tx); err != nil {
				return fmt.Errorf("command %s: writes: %w", o.p.cmd.ID, err)
			}
		}
	}
	var ids, outcomes, codes, details, kinds, targets []string
	var responses, fingerprints [][]byte
	for i := range outs {
		o := &outs[i]
		if _, replay := done[o.p.cmd.ID]; replay || decided[o.p.cmd.ID] != o {
			continue
		}
		if o.events > 0 {
			o.rec.pos = last
		}
		ids = append(ids, o.p.cmd.ID)
		outcomes = append(outcomes, o.rec.outcome)
		codes, details = append(codes, o.rec.code), append(details, o.rec.detail)
		responses = append(responses, o.rec.response)
		kinds, targets = append(kinds, o.rec.kind), append(targets, o.rec.target)
		fingerprints = append(fingerprints, o.rec.fingerprint)
	}
	// The commands' statements and their records, in one round trip.
	b := &pgx.Batch{}
	for i := range outs {
		for _, st := range outs[i].stmts {
			b.Queue(st.SQL, st.Args...)
		}
	}
	if len(ids) > 0 {
		b.Queue(`
INSERT INTO processed_commands (command_id, outcome, response, reject_code, reject_detail, tx_id, position, kind, target, fingerprint)
SELECT id, outcome, response, code, detail, $6, $7, kind, target, fingerprint
FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $8::text[], $9::text[], $10::bytea[])
  AS t(id, outcome, response, code, detail, kind, target, fingerprint)`,
			ids, outcomes, responses, codes, details, int64(last.Tx), last.Global, kinds, targets, fingerprints)
	}
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("record commands: %w", err)
		}
	}
	return nil
}

// answer sets each pending result after the commit and counts it.
func (h *Handler[S]) answer(outs []outcome[S], done map[string]stored, decided map[string]*outcome[S], versions map[string]int64) {
	for i := range outs {
		o := &outs[i]
		_, replay := done[o.p.cmd.ID]
		replay = replay || decided[o.p.cmd.ID] != o
		if o.reused != nil {
			o.p.res, o.p.err = Result{}, o.reused
			h.m.commands.WithLabelValues("reused", "true").Inc()
			continue
		}
		o.p.res, o.p.err = o.rec.result(replay)
		if !replay && o.rej != nil {
			o.p.err = o.rej
		}
		if o.p.err == nil {
			o.p.res.Streams = make(map[string]int64, len(o.p.cmd.Streams))
			for _, s := range o.p.cmd.Streams {
				if v := versions[s]; v > 0 {
					o.p.res.Streams[s] = v
				}
			}
		}
		h.m.commands.WithLabelValues(o.rec.outcome, fmt.Sprint(replay)).Inc()
	}
}

// load returns each stream's state and version: the cached state brought
// up to date with the events after it, or a fold of the whole stream, all
// read in one query.
func (h *Handler[S]) load(ctx context.Context, tx pgx.Tx, streams []string) (map[string]S, map[string]int64, error) {
	states := make(map[string]S, len(streams))
	versions := make(map[string]int64, len(streams))
	from := make(map[string]int64, len(streams))
	for _, s := range streams {
		state, version, ok := h.cache.get(s)
		if !ok {
			state, version = h.agg.New(s), 0
		}
		states[s], versions[s], from[s] = state, version, version+1
	}
	newer, err := h.st.ReadStreamsTx(ctx, tx, from)
	if err != nil {
		return nil, nil, err
	}
	for s, evs := range newer {
		for _, e := range evs {
			msg, err := h.reg.Decode(e.Type, e.Payload)
			if err != nil {
				return nil, nil, fmt.Errorf("load %s version %d: %w", s, e.Version, err)
			}
			states[s] = h.agg.Apply(states[s], msg)
			versions[s] = e.Version
		}
	}
	return states, versions, nil
}

func (h *Handler[S]) toEvents(cmd Command[S], dec Decision, streams []string) (map[string][]envelope.Event, error) {
	out := make(map[string][]envelope.Event, len(dec.Events))
	for s, msgs := range dec.Events {
		if _, ok := slices.BinarySearch(streams, s); !ok {
			return nil, fmt.Errorf("%w: command %s decided events for stream %q it did not load", ErrInvalidCommand, cmd.ID, s)
		}
		for _, m := range msgs {
			typ, payload, err := h.reg.Encode(m)
			if err != nil {
				return nil, fmt.Errorf("command %s: %w", cmd.ID, err)
			}
			out[s] = append(out[s], envelope.Event{ID: ksuid.New(), Type: typ, Payload: payload,
				CorrelationID: cmd.CorrelationID, CausationID: cmd.ID, Metadata: cmd.Metadata})
		}
	}
	return out, nil
}
