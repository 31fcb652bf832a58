package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/keel-commerce/keel/tools/seed/catalog"
)

// Stocking is what Prepare seeds before a run.
type Stocking struct {
	CatalogURL, StockURL string
	// SKUs are listed in the catalog (idempotent, tools/seed/catalog).
	SKUs int
	// Receive units of every SKU, and ReceiveHot of the hot one, are booked
	// into Warehouse (0: no stock received). Each Prepare with a new RunID
	// receives again.
	Receive, ReceiveHot int64
	HotSKU              int
	Warehouse           string
	RunID               string
	Workers             int
}

// Prepare lists the SKUs in the catalog and receives their stock.
func Prepare(ctx context.Context, client *http.Client, s Stocking) error {
	workers := max(s.Workers, 1)
	if _, err := catalog.Seed(ctx, client, s.CatalogURL, s.SKUs, workers); err != nil {
		return fmt.Errorf("seed catalog at %s: %w", s.CatalogURL, err)
	}
	if s.Receive <= 0 && s.ReceiveHot <= 0 {
		return nil
	}
	next := make(chan int)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := range workers {
		wg.Go(func() {
			for i := range next {
				q := s.Receive
				if i == s.HotSKU && s.ReceiveHot > 0 {
					q = s.ReceiveHot
				}
				if q <= 0 {
					continue
				}
				if err := receive(ctx, client, s, i, q); err != nil {
					errs[w] = err
					cancel()
					return
				}
			}
		})
	}
	for i := 1; i <= s.SKUs && ctx.Err() == nil; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}

func receive(ctx context.Context, client *http.Client, s Stocking, i int, q int64) error {
	sku := catalog.SKU(i)
	body, _ := json.Marshal(map[string]any{"warehouse_id": s.Warehouse, "quantity": q, "reference": "loadgen " + s.RunID})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.StockURL+"/stock/"+sku+"/receive", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "loadgen-"+s.RunID+"-receive-"+sku)
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("receive %s at %s: %w", sku, s.StockURL, err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode >= 300 {
		return fmt.Errorf("receive %s: %d %s", sku, res.StatusCode, b)
	}
	return nil
}
