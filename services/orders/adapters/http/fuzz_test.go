package api_test

import (
	"testing"

	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
	api "github.com/keel-commerce/keel/services/orders/adapters/http"
)

// FuzzRequestBodies: the request decoders never panic and accept only
// what the document allows (make test runs it for a few seconds).
func FuzzRequestBodies(f *testing.F) {
	openapitest.FuzzBodies(f, api.OpenAPI, map[string]func() any{
		"POST /orders":              func() any { return new(api.PlaceRequest) },
		"POST /orders/{id}/confirm": func() any { return new(api.CommandRequest) },
		"POST /orders/{id}/pay":     func() any { return new(api.PayRequest) },
		"POST /orders/{id}/cancel":  func() any { return new(api.CancelRequest) },
		"POST /orders/{id}/ship":    func() any { return new(api.ShipRequest) },
	})
}
