package readmodel

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/consume"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Group is the consumer group of a projection's live builder.
func Group(projection string) string { return "projection." + projection }

// Builder applies a projection's events from Kafka to its active copy. It
// is a consume.Handler: run it with the consumer runtime on the sources'
// topics (see Topics) under Group(p.Name()).
type Builder struct {
	p        Projection
	reg      *codec.Registry
	sql      *sqlCache
	contexts map[string]string // topic → source context
}

// NewBuilder returns the live builder of p, decoding payloads with reg.
// topicOf names a source context's topic (nil: topics.Events).
func NewBuilder(p Projection, reg *codec.Registry, topicOf func(context string) string) *Builder {
	if topicOf == nil {
		topicOf = topics.Events
	}
	b := &Builder{p: p, reg: reg, sql: &sqlCache{}, contexts: map[string]string{}}
	for _, src := range p.Sources() {
		b.contexts[topicOf(src)] = src
	}
	return b
}

var _ consume.BatchHandler = (*Builder)(nil)

// Handle implements consume.Handler.
func (b *Builder) Handle(ctx context.Context, tx pgx.Tx, rec *kgo.Record) error {
	ev, err := b.event(rec)
	if err != nil {
		return err
	}
	schema, err := b.begin(ctx, tx)
	if err != nil {
		return err
	}
	_, err = apply(ctx, b.p, &txRows{tx: tx, schema: schema, sql: b.sql}, ev)
	if errors.Is(err, ErrGap) {
		return consume.Permanent(err)
	}
	return err
}

// begin takes the shared lock, then reads the active copy, and queues the
// notification of waiting readers (sent on commit). Shared lock first: a
// rebuild switches copies under the exclusive lock, so this transaction
// either commits before the switch reads the stores' heads or writes to
// the new copy.
func (b *Builder) begin(ctx context.Context, tx pgx.Tx) (string, error) {
	batch := &pgx.Batch{}
	batch.Queue(`SELECT pg_advisory_xact_lock_shared($1)`, lockKey(b.p.Name()))
	batch.Queue(`SELECT schema_name FROM readmodel_generations WHERE projection = $1 AND state = 'active'`, b.p.Name())
	batch.Queue(`SELECT pg_notify($1, $2)`, NotifyChannel, b.p.Name())
	br := tx.SendBatch(ctx, batch)
	var schema string
	_, err := br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&schema)
	}
	if err == nil {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return "", consume.Transient(fmt.Errorf("projection %s has no active copy yet", b.p.Name()))
	}
	return schema, err
}

// HandleBatch implements consume.BatchHandler: the batch's events folded
// over the rows they touch, read once and written back in one round trip,
// with the applied versions of all its streams read in one query. A
// failure (a gap, an undecodable record) makes the runtime re-run the
// batch through Handle, which finds the culprit.
func (b *Builder) HandleBatch(ctx context.Context, tx pgx.Tx, recs []*kgo.Record) error {
	evs := make([]Event, 0, len(recs))
	streams := make([]string, 0, len(recs))
	for _, rec := range recs {
		ev, err := b.event(rec)
		if err != nil {
			return err
		}
		evs = append(evs, ev)
		streams = append(streams, ev.StreamID)
	}
	schema, err := b.begin(ctx, tx)
	if err != nil {
		return err
	}
	rows := newMemRows(tx, schema, false)
	rows.sql = b.sql
	if err := rows.preload(ctx, &appliedStreams.TableDef, streams); err != nil {
		return err
	}
	for _, ev := range evs {
		if _, err := apply(ctx, b.p, rows, ev); err != nil {
			if errors.Is(err, ErrGap) {
				return consume.Permanent(err)
			}
			return err
		}
	}
	return rows.upsertDirty(ctx, tx)
}

// event decodes a record of one of the projection's topics.
func (b *Builder) event(rec *kgo.Record) (Event, error) {
	src, ok := b.contexts[rec.Topic]
	if !ok {
		return Event{}, consume.Permanent(fmt.Errorf("projection %s does not read topic %s", b.p.Name(), rec.Topic))
	}
	return decode(b.reg, rec, src)
}

// decode turns a Kafka record into an Event; a record that is not a Keel
// event of a known type is poison.
func decode(reg *codec.Registry, rec *kgo.Record, src string) (Event, error) {
	env, err := consume.DecodeEvent(rec)
	if err != nil {
		return Event{}, err
	}
	msg, err := reg.Decode(env.Type, env.Payload)
	if err != nil {
		return Event{}, consume.Permanent(fmt.Errorf("decode %s payload: %w", env.Type, err))
	}
	return Event{Event: env, Context: src, Message: msg}, nil
}

// txRows reads and writes rows of one copy inside a transaction.
type txRows struct {
	tx     pgx.Tx
	schema string
	sql    *sqlCache
}

func (r *txRows) get(ctx context.Context, def *TableDef, key []any) ([]any, bool, error) {
	dests, vals := scanDests(def.Columns)
	err := r.tx.QueryRow(ctx, r.sql.get(r.schema, def, false), dbValues(def.Columns[:def.Key], key)...).Scan(dests...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", def.Name, err)
	}
	return vals(), true, nil
}

func (r *txRows) put(ctx context.Context, def *TableDef, vals []any) error {
	if _, err := r.tx.Exec(ctx, r.sql.get(r.schema, def, true), dbValues(def.Columns, vals)...); err != nil {
		return fmt.Errorf("write %s: %w", def.Name, err)
	}
	return nil
}

// sqlCache keeps the generated statements per copy and table.
type sqlCache struct{ m sync.Map }

func (c *sqlCache) get(schema string, def *TableDef, upsert bool) string {
	k := fmt.Sprint(schema, ".", def.Name, upsert)
	if s, ok := c.m.Load(k); ok {
		return s.(string)
	}
	s := def.selectSQL(schema)
	if upsert {
		s = def.upsertSQL(schema)
	}
	c.m.Store(k, s)
	return s
}
