// Package rmtest helps the projections' pure tests: it numbers each
// stream's events as a store would, merges streams into interleavings that
// keep each stream's order, and folds events into in-memory rows.
package rmtest

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/projections/readmodel"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// T0 is the tests' epoch: an hour's start, so hour buckets are easy to
// name.
var T0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// At is the payload timestamp d after T0.
func At(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(T0.Add(d)) }

// Stream hands out consecutive versions of one stream.
type Stream struct {
	Context string // source context, e.g. "carts"
	ID      string // stream id
	version int64
}

// Event is msg as the next event of s, recorded at at.
func (s *Stream) Event(msg proto.Message, at time.Time) readmodel.Event {
	s.version++
	return readmodel.Event{
		Event: envelope.Event{
			Type:       string(msg.ProtoReflect().Descriptor().FullName()),
			StreamID:   s.ID,
			Version:    s.version,
			RecordedAt: at,
		},
		Context: s.Context,
		Message: msg,
	}
}

// Events is msgs as the next events of s, all recorded at at.
func (s *Stream) Events(at time.Time, msgs ...proto.Message) []readmodel.Event {
	evs := make([]readmodel.Event, len(msgs))
	for i, m := range msgs {
		evs[i] = s.Event(m, at)
	}
	return evs
}

// Interleave merges streams into one sequence that keeps each stream's
// order, choosing the next stream with a generator seeded by seed: the same
// seed gives the same sequence.
func Interleave(seed uint64, streams ...[]readmodel.Event) []readmodel.Event {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	next := make([]int, len(streams))
	var out []readmodel.Event
	for {
		var open []int
		for i, s := range streams {
			if next[i] < len(s) {
				open = append(open, i)
			}
		}
		if len(open) == 0 {
			return out
		}
		i := open[r.IntN(len(open))]
		out = append(out, streams[i][next[i]])
		next[i]++
	}
}

// Concat is the streams one after another: the interleaving a rebuild
// reading stream by stream would see.
func Concat(streams ...[]readmodel.Event) []readmodel.Event {
	var out []readmodel.Event
	for _, s := range streams {
		out = append(out, s...)
	}
	return out
}

// Fold applies evs to fresh in-memory rows through p, as a builder would
// (duplicates skipped, gaps refused), failing t on an error.
func Fold(t testing.TB, p readmodel.Projection, evs ...readmodel.Event) readmodel.Rows {
	t.Helper()
	rows := readmodel.Memory()
	if err := readmodel.ApplyAll(context.Background(), p, rows, evs...); err != nil {
		t.Fatalf("apply: %v", err)
	}
	return rows
}

// Get reads one row of t, failing t on an error or when it is missing.
func Get[R any](t testing.TB, rows readmodel.Rows, tab *readmodel.Table[R], key ...any) R {
	t.Helper()
	r, ok, err := tab.Get(context.Background(), rows, key...)
	if err != nil {
		t.Fatalf("get %s %v: %v", tab.Name, key, err)
	}
	if !ok {
		t.Fatalf("get %s %v: no row", tab.Name, key)
	}
	return r
}

// Missing fails t unless t has no row with key.
func Missing[R any](t testing.TB, rows readmodel.Rows, tab *readmodel.Table[R], key ...any) {
	t.Helper()
	r, ok, err := tab.Get(context.Background(), rows, key...)
	if err != nil || ok {
		t.Fatalf("get %s %v: want no row, got %+v (err %v)", tab.Name, key, r, err)
	}
}
