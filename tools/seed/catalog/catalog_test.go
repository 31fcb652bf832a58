package catalog

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	api "github.com/keel-commerce/keel/services/carts/catalog/adapters/http"
	"github.com/keel-commerce/keel/services/carts/catalog/app"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
)

// catalog runs the real catalog API on a fresh database.
func catalog(t *testing.T) (*httptest.Server, *app.Service) {
	t.Helper()
	ctx := context.Background()
	pool := testenv.Pool(t)
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	svc, err := app.New(ctx, st, app.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	mux := http.NewServeMux()
	api.New(svc, nil, nil).Register(mux)
	srv := httptest.NewServer(openapitest.New(t, api.OpenAPI).Handler(httpapi.Wrap(mux, nil, nil)))
	t.Cleanup(srv.Close)
	return srv, svc
}

func TestSeedIsIdempotent(t *testing.T) {
	ctx := context.Background()
	srv, svc := catalog(t)
	fresh, err := Seed(ctx, srv.Client(), srv.URL, 100, 8)
	if err != nil || fresh != 100 {
		t.Fatalf("first seed: %d new, %v", fresh, err)
	}
	// Again, and further: the first 100 change nothing.
	fresh, err = Seed(ctx, srv.Client(), srv.URL, 120, 8)
	if err != nil || fresh != 20 {
		t.Fatalf("second seed: %d new, %v", fresh, err)
	}
	var events int
	if err := svc.Pool().QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&events); err != nil || events != 120 {
		t.Fatalf("%d events, %v", events, err)
	}
	for _, i := range []int{1, 57, 100} {
		p, err := svc.Product(ctx, SKU(i))
		if err != nil || p.UnitPrice.AmountMinor != Price(i) || p.UnitPrice.Currency != "EUR" || !p.Listed {
			t.Fatalf("%s: %+v, %v", SKU(i), p, err)
		}
	}
	if SKU(1) != "SKU-00001" || Price(1) == Price(2) {
		t.Fatalf("sku %s, prices %d %d", SKU(1), Price(1), Price(2))
	}
	page, err := svc.Products(ctx, "", 1000)
	if err != nil || len(page) != 120 {
		t.Fatalf("%d listed, %v", len(page), err)
	}
}
