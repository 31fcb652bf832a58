// Package readmodel is the machinery every Keel projection runs on.
//
// A projection is a fold: Apply takes one event and changes rows of the
// projection's tables through Rows. The same Apply runs in two places:
//
//   - live, in a Builder: a consumer group on the source contexts' Kafka
//     topics, each event applied in the consumer runtime's transaction with
//     its checkpoint (invariant 5);
//   - in a rebuild, reading the owning services' event stores from the
//     start (Kafka may keep less), folding into memory and writing in bulk
//     into a new copy of the tables, which then replaces the live copy in
//     one transaction.
//
// # The contract that makes a rebuild equal the live tables
//
// Kafka orders events per stream (one key, one partition), not across
// streams; a rebuild reads each store in its own order. So a projection
// must give the same rows for any interleaving of its streams that keeps
// each stream's order: a row may depend on the events of several streams
// only through sums and counts (analytics) or last-writer-wins on data of
// one stream. Every projection here keeps to that, and the rebuild-equals-
// live test checks it.
//
// Beware a sum kept in one row that several streams read, change and put
// back: the live builder applies partitions in concurrent READ COMMITTED
// transactions and Get takes no lock, so two of them read the same count
// and both write count+1 (8 streams of 50 increments through
// Builder.Handle at once left 71 of 400). Until Rows offers an atomic add,
// keep every row to one stream's events and sum at query time, as
// projections/analytics does.
//
// The machinery keeps, per copy, the last applied version of every source
// stream (table applied_streams). An event at or below it is a duplicate or
// a replay and is skipped, which makes redelivery, replay and the switch
// from a rebuilt copy to the live tail exact. An event above the next
// version means events are missing (Kafka retention shorter than the
// history): it is refused loudly, with the advice to rebuild from the
// stores.
//
// # Copies
//
// Each projection's tables live in a PostgreSQL schema per copy
// ("generation"): rm_<projection>_<n>. The table readmodel_generations
// says which copy is active; queries and the live builder use that one. A
// rebuild fills a new copy and switches it in under an exclusive lock
// that the live builder's transactions take shared, so no event applied to
// the old copy can be missed by the new one.
package readmodel

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keel-commerce/keel/events/envelope"
	"google.golang.org/protobuf/proto"
)

// Event is an event as a projection sees it: the envelope, the context it
// came from (the "orders" of orders.events) and its decoded payload.
type Event struct {
	envelope.Event
	Context string
	Message proto.Message
}

// Projection keeps one read model. Implementations are pure: Apply does no
// I/O except through rows, and must be deterministic.
type Projection interface {
	// Name is the projection's name: lower case, digits and underscores.
	Name() string
	// Sources are the contexts whose events it reads ("orders", "carts").
	Sources() []string
	// Tables are the tables Apply writes.
	Tables() []*TableDef
	// Apply folds ev into rows. It sees every event of its sources, in
	// stream order, once per copy; it ignores the types it does not need.
	Apply(ctx context.Context, rows Rows, ev Event) error
}

// ErrGap is returned when an event arrives past the next version of its
// stream: the events in between never reached this copy.
var ErrGap = errors.New("readmodel: events missing before this one")

// applied is the last applied version of a source stream in one copy.
type applied struct {
	Stream  string
	Version int64
	At      time.Time // recorded time of that event
}

var appliedStreams = &Table[applied]{
	TableDef: TableDef{
		Name:    "applied_streams",
		Columns: []Column{{"stream_id", Text}, {"version", Int}, {"recorded_at", Time}},
		Key:     1,
	},
	Encode: func(a applied) []any { return []any{a.Stream, a.Version, a.At} },
	Decode: func(v []any) (applied, error) {
		return applied{Stream: v[0].(string), Version: v[1].(int64), At: v[2].(time.Time)}, nil
	},
}

// allTables is the projection's tables plus the machinery's own.
func allTables(p Projection) []*TableDef {
	return append(slices.Clone(p.Tables()), &appliedStreams.TableDef)
}

// apply runs p.Apply on ev unless this copy has it already, and records it.
// A message of another context's package is not an event of ev.Context's
// topic: the checkout saga's store holds its outbox of commands
// (keel.orders.v1.PlaceOrder on outbox-<id>), which its relay routes to
// <context>.commands, so a live builder never sees them while a rebuild,
// reading the store, does. Skipping them, unrecorded, keeps a rebuilt
// copy's applied streams equal to the live one's.
func apply(ctx context.Context, p Projection, rows Rows, ev Event) (bool, error) {
	if !ofContext(ev.Type, ev.Context) {
		return false, nil
	}
	cur, _, err := appliedStreams.Get(ctx, rows, ev.StreamID)
	if err != nil {
		return false, err
	}
	switch {
	case ev.Version <= cur.Version:
		return false, nil // a duplicate delivery or a replay
	case ev.Version != cur.Version+1:
		return false, fmt.Errorf("%w: stream %s is at version %d in projection %s, event %s has version %d; "+
			"rebuild the projection from the event stores (keelctl projections rebuild %s)",
			ErrGap, ev.StreamID, cur.Version, p.Name(), ev.ID, ev.Version, p.Name())
	}
	if err := p.Apply(ctx, rows, ev); err != nil {
		return false, fmt.Errorf("projection %s: apply %s %s@%d: %w", p.Name(), ev.Type, ev.StreamID, ev.Version, err)
	}
	return true, appliedStreams.Put(ctx, rows, applied{Stream: ev.StreamID, Version: ev.Version, At: ev.RecordedAt})
}

// ofContext reports whether a message type ("keel.checkout.v1.X") belongs
// to context's package; types outside keel.* are let through.
func ofContext(typ, context string) bool {
	rest, ok := strings.CutPrefix(typ, "keel.")
	if !ok || context == "" {
		return true
	}
	pkg, _, _ := strings.Cut(rest, ".")
	return pkg == context
}
