// Package store is the event-store port: what every backend (PostgreSQL now,
// EventStoreDB later) must do, and the errors callers can act on. The
// conformance suite in storetest pins the behaviour down; every backend runs it.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keel-commerce/keel/events/envelope"
)

// ExpectedVersion is the optimistic-concurrency condition of an append:
// Any, NoStream, or an exact version (the version of the stream's last event).
type ExpectedVersion int64

const (
	// Any appends whatever the stream's version.
	Any ExpectedVersion = -1
	// NoStream appends only if the stream has no events yet.
	NoStream ExpectedVersion = 0
)

// Exact expects the stream's last event to have version v (v ≥ 1);
// Exact(0) is NoStream.
func Exact(v int64) ExpectedVersion { return ExpectedVersion(v) }

func (e ExpectedVersion) String() string {
	switch {
	case e == Any:
		return "any"
	case e == NoStream:
		return "no stream"
	default:
		return fmt.Sprintf("version %d", int64(e))
	}
}

// ErrInvalidAppend reports an append that can never succeed: no events, an
// event without id or type, or a bad expected version.
var ErrInvalidAppend = errors.New("invalid append")

// ConflictError reports that a stream's version did not match the append's
// expected version, or that different events already hold those versions.
// The caller should reload the stream and decide again.
type ConflictError struct {
	Stream   string
	Expected ExpectedVersion
	Actual   int64 // the stream's version when the append was refused
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("stream %q: expected %s, stream is at version %d", e.Stream, e.Expected, e.Actual)
}

// IsConflict reports whether err is (or wraps) a *ConflictError.
func IsConflict(err error) bool {
	var c *ConflictError
	return errors.As(err, &c)
}

// AppendResult says where an append's events landed.
type AppendResult struct {
	// Version is the stream's version after the append (its last event's).
	Version int64
	// Last is the global position of the append's last event: a consistency
	// token for read-your-writes.
	Last envelope.Position
	// Duplicate is true when every event was already stored (an idempotent
	// retry) and nothing new was written.
	Duplicate bool
}

// Store is an append-only log of streams with a global order.
// Implementations are safe for concurrent use.
type Store interface {
	// Append atomically appends events to stream if its version matches
	// expected. Either every event is stored or none is. Appending events
	// whose ids are already stored at exactly those versions succeeds with
	// Duplicate set and writes nothing; other events at those versions get a
	// *ConflictError.
	Append(ctx context.Context, stream string, expected ExpectedVersion, events []envelope.Event) (AppendResult, error)

	// ReadStream returns up to limit events of stream with version ≥ from,
	// in version order. A missing stream reads as empty.
	ReadStream(ctx context.Context, stream string, from int64, limit int) ([]envelope.Event, error)

	// ReadAll returns up to limit committed events after position after, in
	// global order. It never returns an event while an older transaction
	// that could still commit events before it is running, so a caller that
	// resumes from the last position it saw never skips an event.
	ReadAll(ctx context.Context, after envelope.Position, limit int) ([]envelope.Event, error)

	// Subscribe delivers every event after position after, in global order,
	// in batches: first the history, then new events as they commit. It
	// returns when ctx ends or handle returns an error. handle is called
	// from one goroutine at a time; the position to resume from is that of
	// the last event of the last batch handle accepted.
	Subscribe(ctx context.Context, after envelope.Position, handle func(context.Context, []envelope.Event) error) error

	// Head returns the position of the newest visible event and the time it
	// was recorded (zero values for an empty store). Lag is Head minus what a
	// reader has delivered.
	Head(ctx context.Context) (envelope.Position, time.Time, error)
}
