package api_test

import (
	"testing"

	api "github.com/keel-commerce/keel/services/carts/adapters/http"
	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
)

// FuzzRequestBodies: the request decoders never panic and accept only
// what the document allows (make test runs it for a few seconds).
func FuzzRequestBodies(f *testing.F) {
	openapitest.FuzzBodies(f, api.OpenAPI, map[string]func() any{
		"POST /carts":                    func() any { return new(api.CreateRequest) },
		"POST /carts/{id}/lines":         func() any { return new(api.AddLineRequest) },
		"PATCH /carts/{id}/lines/{sku}":  func() any { return new(api.QuantityRequest) },
		"DELETE /carts/{id}/lines/{sku}": func() any { return new(api.CommandRequest) },
		"POST /carts/{id}/clear":         func() any { return new(api.CommandRequest) },
		"POST /carts/{id}/checkout":      func() any { return new(api.CheckoutRequest) },
	})
}
