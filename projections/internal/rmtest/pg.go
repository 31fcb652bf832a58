package rmtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/keel-commerce/keel/events/wire"
	"github.com/keel-commerce/keel/projections/readmodel"
	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"
)

// Load applies evs to a fresh active copy of p in a throw-away database
// through the live builder's path (a Kafka record each, handled in a
// transaction of its own) and returns the database and the copy's schema:
// for the query functions' tests. It needs the local PostgreSQL (make up);
// no broker.
func Load(t testing.TB, p readmodel.Projection, evs ...readmodel.Event) (readmodel.Querier, string) {
	t.Helper()
	ctx := context.Background()
	pool := testenv.Pool(t)
	testenv.Must(t, readmodel.Migrate(ctx, pool), "migrate")
	g, err := readmodel.EnsureActive(ctx, pool, p)
	testenv.Must(t, err, "active copy")
	b := readmodel.NewBuilder(p, codec.All(), nil)
	for _, ev := range evs {
		if ev.ID == (ksuid.KSUID{}) {
			ev.ID = ksuid.New()
		}
		ev.Payload, err = proto.Marshal(ev.Message)
		testenv.Must(t, err, "marshal %s", ev.Type)
		rec := wire.Record(topics.Events(ev.Context), "keel/"+ev.Context, ev.Event)
		err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return b.Handle(ctx, tx, rec) })
		testenv.Must(t, err, "apply %s %s@%d", ev.Type, ev.StreamID, ev.Version)
	}
	return pool, g.Schema
}

// Pages reads every page of a keyset list, starting from the zero cursor
// and passing each next cursor through its string form, as a client does.
func Pages[R any](t testing.TB, page func(after readmodel.Cursor) ([]R, readmodel.Cursor, error)) []R {
	t.Helper()
	var out []R
	var after readmodel.Cursor
	for {
		rows, next, err := page(after)
		testenv.Must(t, err, "list")
		out = append(out, rows...)
		if next.ID == "" {
			return out
		}
		after, err = readmodel.ParseCursor(next.String())
		testenv.Must(t, err, "cursor")
	}
}
