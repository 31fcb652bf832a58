package stockhttp_test

import (
	"testing"

	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
	stockhttp "github.com/keel-commerce/keel/services/stock/adapters/http"
)

// FuzzRequestBodies: the request decoders never panic and accept only
// what the document allows (make test runs it for a few seconds).
func FuzzRequestBodies(f *testing.F) {
	openapitest.FuzzBodies(f, stockhttp.OpenAPI, map[string]func() any{
		"POST /stock/{sku}/receive":             func() any { return new(stockhttp.ReceiveRequest) },
		"POST /stock/{sku}/adjust":              func() any { return new(stockhttp.AdjustRequest) },
		"POST /reservations":                    func() any { return new(stockhttp.ReserveRequest) },
		"POST /reservations/{order_id}/release": func() any { return new(stockhttp.ReleaseRequest) },
		"POST /reservations/{order_id}/commit":  func() any { return new(stockhttp.CommitRequest) },
	})
}
