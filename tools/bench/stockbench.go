package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/services/stock/app"
)

// reserveClients is the client count for the reservation figures.
const reserveClients = 64

// benchReserve measures one-unit stock reservations through the stock
// service's application layer (events/command batching, one stream per
// SKU, the order-SKU row in the same transaction) with 64 closed-loop
// clients over skus SKUs, each SKU stocked with enough units never to run
// out. It is the same code path HTTP and Kafka commands take, minus the
// transport.
func benchReserve(ctx context.Context, cfg config, skus int) (loopResult, error) {
	pool, drop, err := freshDB(ctx, reserveClients+8)
	if err != nil {
		return loopResult{}, err
	}
	defer drop()
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		return loopResult{}, err
	}
	defer st.Close()
	svc, err := app.New(ctx, st, app.Config{})
	if err != nil {
		return loopResult{}, err
	}
	defer svc.Close()

	// Stock every SKU first (concurrently: the handler batches them).
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, reserveClients)
	for range reserveClients {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < skus; i = int(next.Add(1)) - 1 {
				sku := fmt.Sprintf("BENCH-%05d", i)
				if _, err := svc.Receive(ctx, app.Receive{CommandID: "rcv-" + sku, SKU: sku, Warehouse: "wh-1", Quantity: 1 << 40}); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return loopResult{}, fmt.Errorf("stock the SKUs: %w", err)
	}

	var seq atomic.Int64
	return closedLoop(ctx, reserveClients, cfg.warm, cfg.duration, func(ctx context.Context, w, i int) (int, error) {
		n := seq.Add(1)
		sku := fmt.Sprintf("BENCH-%05d", int(n)%skus)
		_, err := svc.Reserve(ctx, app.Reserve{CommandID: fmt.Sprintf("res-%d", n), OrderID: fmt.Sprintf("order-%d", n),
			Lines: []app.Line{{SKU: sku, Quantity: 1}}})
		return 1, err
	})
}
