// Package envelope defines the record every Keel event travels in: the
// identity, ordering and tracing facts around an opaque, schema-typed payload.
//
// The same envelope is what the event store persists, what the relay maps to
// Kafka headers (CloudEvents binary mode) and what consumers decode.
package envelope

import (
	"fmt"
	"time"

	"github.com/segmentio/ksuid"
)

// Event is one immutable fact in a stream.
//
// When appending, callers set ID, Type, Payload and optionally CorrelationID,
// CausationID and Metadata; the store fills StreamID, Version, Position and
// RecordedAt. The zero value is not a valid event.
type Event struct {
	// ID is unique across all streams; a KSUID, so ids sort by creation time.
	// Appending an event whose ID is already stored at the same place is a no-op.
	ID ksuid.KSUID
	// Type is the fully-qualified protobuf message name of Payload, e.g.
	// "keel.stock.v1.StockReserved". It is the key to decode Payload.
	Type string
	// StreamID names the aggregate instance, e.g. "stock-SKU1-WH1".
	StreamID string
	// Version is the 1-based position of the event inside its stream.
	Version int64
	// Position is where the event sits in the store's global order.
	Position Position
	// RecordedAt is when the store accepted the event.
	RecordedAt time.Time
	// CorrelationID ties together every event of one business flow (a checkout).
	CorrelationID string
	// CausationID is the id of the command or event that caused this one.
	CausationID string
	// Payload is the protobuf encoding of the message named by Type.
	Payload []byte
	// Metadata carries free-form string facts, e.g. "traceparent".
	Metadata map[string]string
}

// Metadata keys with a meaning across Keel.
const (
	// MetaTraceparent holds a W3C trace context header value.
	MetaTraceparent = "traceparent"
)

// Position is a place in a store's global order.
//
// Events are ordered by (Tx, Global), not by Global alone: global numbers are
// handed out when a transaction inserts, but transactions commit in another
// order, so a row with a lower Global can become visible after a row with a
// higher one. Tx is the 64-bit id of the writing transaction, and a reader
// only returns rows whose transaction is older than every transaction still
// running, so nothing can later appear behind a position already passed.
//
// The zero Position is before the first event.
type Position struct {
	Tx     uint64 // writing transaction (PostgreSQL xid8)
	Global int64  // global sequence number, unique per event
}

// Less reports whether p sorts before q.
func (p Position) Less(q Position) bool {
	if p.Tx != q.Tx {
		return p.Tx < q.Tx
	}
	return p.Global < q.Global
}

// IsZero reports whether p is the start of the store.
func (p Position) IsZero() bool { return p == Position{} }

// String formats p as "tx/global", the form ParsePosition reads.
func (p Position) String() string { return fmt.Sprintf("%d/%d", p.Tx, p.Global) }

// ParsePosition parses the "tx/global" form of String.
func ParsePosition(s string) (Position, error) {
	var p Position
	if _, err := fmt.Sscanf(s, "%d/%d", &p.Tx, &p.Global); err != nil {
		return Position{}, fmt.Errorf("parse position %q: %w", s, err)
	}
	return p, nil
}
