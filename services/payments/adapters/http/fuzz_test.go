package api_test

import (
	"testing"

	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
	api "github.com/keel-commerce/keel/services/payments/adapters/http"
)

// FuzzRequestBodies: the request decoders never panic and accept only
// what the document allows (make test runs it for a few seconds).
func FuzzRequestBodies(f *testing.F) {
	openapitest.FuzzBodies(f, api.OpenAPI, map[string]func() any{
		"POST /payments":              func() any { return new(api.AuthorizeRequest) },
		"POST /payments/{id}/capture": func() any { return new(api.CaptureRequest) },
		"POST /payments/{id}/void":    func() any { return new(api.VoidRequest) },
		"POST /payments/{id}/refund":  func() any { return new(api.RefundRequest) },
	})
}
