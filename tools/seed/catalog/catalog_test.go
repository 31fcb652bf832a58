package catalog

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keel-commerce/keel/events/store/pg"
	api "github.com/keel-commerce/keel/services/carts/catalog/adapters/http"
	"github.com/keel-commerce/keel/services/carts/catalog/app"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
)

// catalog runs the real catalog API on a fresh database.
func catalog(t *testing.T) (*httptest.Server, *app.Service) {
	t.Helper()
	ctx := context.Background()
	server := os.Getenv("KEEL_PG_URL")
	if server == "" {
		server = "postgres://keel:keel@127.0.0.1:5432/postgres"
	}
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Fatalf("PostgreSQL is not reachable (run `make up`): %v", err)
	}
	defer admin.Close(ctx)
	name := "keel_seed_test_" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), server)
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = c.Close(context.Background())
		}
	})
	u, _ := url.Parse(server)
	u.Path = "/" + name
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
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
