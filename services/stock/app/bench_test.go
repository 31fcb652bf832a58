package app_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-commerce/keel/services/stock/app"
)

// benchReserve runs b.N one-unit reservations from 64 clients over skus
// SKUs and reports reservations/s.
func benchReserve(b *testing.B, skus int) {
	ctx := context.Background()
	s, _, _ := setup(b, app.Config{})
	for i := range skus {
		receive(b, s, fmt.Sprintf("B-%d", i), "A", 1<<40)
	}
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if _, err := s.Reserve(ctx, app.Reserve{CommandID: fmt.Sprintf("b-%d", i), OrderID: fmt.Sprintf("o-%d", i),
					Lines: []app.Line{{SKU: fmt.Sprintf("B-%d", int(i)%skus), Quantity: 1}}}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reservations/s")
}

// BenchmarkReserveHotSKU: 64 clients on one SKU (target ≥ 2,000/s).
func BenchmarkReserveHotSKU(b *testing.B) { benchReserve(b, 1) }

// BenchmarkReserveSpread: 64 clients over 10,000 SKUs (target ≥ 5,000/s).
func BenchmarkReserveSpread(b *testing.B) { benchReserve(b, 10_000) }
