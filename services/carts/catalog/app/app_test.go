package app_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/services/carts/catalog/app"
)

func newService(t *testing.T) *app.Service {
	t.Helper()
	ctx := context.Background()
	st, err := pg.New(ctx, testenv.Pool(t), pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	svc, err := app.New(ctx, st, app.Config{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc
}

func TestListChangeDelistKeepReadTable(t *testing.T) {
	ctx := context.Background()
	svc := newService(t)
	eur := func(n int64) app.Money { return app.Money{AmountMinor: n, Currency: "EUR"} }
	if _, err := svc.List(ctx, app.List{CommandID: "l1", SKU: "SKU-1", Name: "Kettle", UnitPrice: eur(2999)}); err != nil {
		t.Fatal(err)
	}
	p, err := svc.Product(ctx, "SKU-1")
	if err != nil || p.UnitPrice != eur(2999) || !p.Listed || p.Name != "Kettle" {
		t.Fatalf("after list: %+v, %v", p, err)
	}
	// The same command id again changes nothing and answers the same.
	res, err := svc.List(ctx, app.List{CommandID: "l1", SKU: "SKU-1", Name: "Kettle", UnitPrice: eur(2999)})
	if err != nil || !res.Replayed {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	// Another id is refused: listed already.
	if _, err := svc.List(ctx, app.List{CommandID: "l2", SKU: "SKU-1", Name: "Kettle", UnitPrice: eur(1)}); !command.IsRejection(err) {
		t.Fatalf("second list: %v", err)
	}
	if _, err := svc.ChangePrice(ctx, app.ChangePrice{CommandID: "p1", SKU: "SKU-1", UnitPrice: eur(2499)}); err != nil {
		t.Fatal(err)
	}
	var rej *command.Rejection
	if _, err := svc.ChangePrice(ctx, app.ChangePrice{CommandID: "p2", SKU: "SKU-1", UnitPrice: app.Money{AmountMinor: 1, Currency: "USD"}}); !errors.As(err, &rej) || rej.Code != app.CodeCurrencyMismatch {
		t.Fatalf("currency change: %v", err)
	}
	if p, _ := svc.Product(ctx, "SKU-1"); p.UnitPrice != eur(2499) {
		t.Fatalf("after price change: %+v", p)
	}
	if _, err := svc.Delist(ctx, app.Delist{CommandID: "d1", SKU: "SKU-1"}); err != nil {
		t.Fatal(err)
	}
	if p, _ := svc.Product(ctx, "SKU-1"); p.Listed {
		t.Fatalf("after delist: %+v", p)
	}
	if list, err := svc.Products(ctx, "", 10); err != nil || len(list) != 0 {
		t.Fatalf("listed products after delist: %+v, %v", list, err)
	}
	if _, err := svc.Product(ctx, "nope"); !errors.Is(err, app.ErrNotFound) {
		t.Fatalf("unknown sku: %v", err)
	}
	if _, err := svc.List(ctx, app.List{CommandID: "x", SKU: "a/b", Name: "n", UnitPrice: eur(1)}); !errors.Is(err, app.ErrInvalid) {
		t.Fatalf("bad sku: %v", err)
	}
}

// TestListRace: 50 goroutines list one SKU under different command ids;
// exactly one wins, and the read table holds its price.
func TestListRace(t *testing.T) {
	ctx := context.Background()
	svc := newService(t)
	var won, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			_, err := svc.List(ctx, app.List{CommandID: "race-" + string(rune('A'+i)), SKU: "HOT", Name: "Hot", UnitPrice: app.Money{AmountMinor: int64(100 + i), Currency: "EUR"}})
			switch {
			case err == nil:
				won.Add(1)
			case command.IsRejection(err):
				refused.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if won.Load() != 1 || refused.Load() != 49 {
		t.Fatalf("won %d, refused %d; want 1 and 49", won.Load(), refused.Load())
	}
	var events int
	if err := svc.Pool().QueryRow(ctx, `SELECT count(*) FROM events WHERE stream_id = $1`, app.Stream("HOT")).Scan(&events); err != nil || events != 1 {
		t.Fatalf("events %d, %v", events, err)
	}
}
