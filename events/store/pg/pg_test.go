package pg_test

import (
	"context"
	"testing"

	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/store/storetest"
	"github.com/keel-commerce/keel/events/testenv"
)

func newStore(t *testing.T) *pg.Store {
	t.Helper()
	s, err := pg.New(context.Background(), testenv.Pool(t), pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return newStore(t) })
}
