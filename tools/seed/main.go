// Command seed lists N products in the catalog through its HTTP API,
// idempotently (see package tools/seed/catalog): SKUs are SKU-00001…,
// prices are deterministic EUR minor units, and a second run changes
// nothing it already did.
//
//	go run ./tools/seed -n 10000 [-url http://127.0.0.1:8086] [-workers 16]
//
// It lives in tools/ and not at services/carts/cmd/catalog-seed because
// every services/<svc>/cmd/<x> is started by `make up` as a long-running
// service with a port; and it goes through the catalog's API, not its
// database, so it works against any deployment and exercises the same
// validation as every other client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/keel-commerce/keel/tools/seed/catalog"
)

func main() {
	n := flag.Int("n", 10000, "products to list")
	base := flag.String("url", envOr("KEEL_CATALOG_URL", "http://127.0.0.1:8086"), "catalog API base URL")
	workers := flag.Int("workers", 16, "concurrent requests")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	fresh, err := catalog.Seed(ctx, &http.Client{Timeout: 30 * time.Second}, *base, *n, max(*workers, 1))
	fmt.Fprintf(os.Stderr, "seed: %d products (%d new) at %s in %s\n", *n, fresh, *base, time.Since(start).Round(time.Millisecond))
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "seed:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
