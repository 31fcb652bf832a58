// Package catalog lists N products in the catalog through its HTTP API,
// idempotently: SKUs are SKU-00001…, prices are deterministic EUR minor
// units, and each command id is derived from its SKU ("seed-list-<sku>"),
// so a second run (or a run that died half way) changes nothing it already
// did. The seed command (tools/seed) and the load generator (tools/loadgen)
// use it.
package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// SKU is the i-th seeded SKU (1-based).
func SKU(i int) string { return fmt.Sprintf("SKU-%05d", i) }

// Price is the i-th product's unit price in EUR cents: 1.99 to 999.99,
// spread and deterministic.
func Price(i int) int64 { return 199 + int64(i*7919%99801) }

type money struct {
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
}

type listRequest struct {
	CommandID string `json:"command_id"`
	SKU       string `json:"sku"`
	Name      string `json:"name"`
	UnitPrice money  `json:"unit_price"`
}

// Seed lists products 1..n at base with workers concurrent requests and
// returns how many were listed now (the rest were already).
func Seed(ctx context.Context, client *http.Client, base string, n, workers int) (int64, error) {
	var listed atomic.Int64
	next := make(chan int)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range workers {
		wg.Go(func() {
			for i := range next {
				fresh, err := list(ctx, client, base, i)
				if err != nil {
					errc <- err
					cancel()
					return
				}
				if fresh {
					listed.Add(1)
				}
			}
		})
	}
loop:
	for i := 1; i <= n; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
			break loop
		}
	}
	close(next)
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return listed.Load(), err
	}
	return listed.Load(), ctx.Err()
}

// list lists product i; fresh is false when it was listed before (by this
// seed's command id, answered from the stored outcome, or already listed).
func list(ctx context.Context, client *http.Client, base string, i int) (fresh bool, err error) {
	sku := SKU(i)
	body, _ := json.Marshal(listRequest{CommandID: "seed-list-" + sku, SKU: sku, Name: "Product " + sku[4:],
		UnitPrice: money{AmountMinor: Price(i), Currency: "EUR"}})
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/products", bytes.NewReader(body))
		if err != nil {
			return false, err
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			var p struct{ Code string }
			_ = json.Unmarshal(b, &p)
			switch {
			case res.StatusCode == http.StatusCreated:
				return res.Header.Get("X-Keel-Command-Replayed") != "true", nil
			case res.StatusCode == http.StatusConflict && p.Code == "already_listed":
				return false, nil
			case res.StatusCode < 500:
				return false, fmt.Errorf("list %s: %d %s", sku, res.StatusCode, b)
			}
			err = fmt.Errorf("list %s: %d %s", sku, res.StatusCode, b)
		}
		if attempt == 4 || ctx.Err() != nil {
			return false, err
		}
		time.Sleep(time.Duration(100<<attempt) * time.Millisecond) // the command id makes the retry safe
	}
}
