package api_test

import (
	"testing"

	api "github.com/keel-commerce/keel/services/carts/catalog/adapters/http"
	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
)

// FuzzRequestBodies: the request decoders never panic and accept only
// what the document allows (make test runs it for a few seconds).
func FuzzRequestBodies(f *testing.F) {
	openapitest.FuzzBodies(f, api.OpenAPI, map[string]func() any{
		"POST /products":              func() any { return new(api.ListRequest) },
		"POST /products/{sku}/price":  func() any { return new(api.PriceRequest) },
		"POST /products/{sku}/delist": func() any { return new(api.DelistRequest) },
	})
}
