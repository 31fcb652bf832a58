package http_test

import (
	"testing"

	checkouthttp "github.com/keel-commerce/keel/services/checkout/adapters/http"
	"github.com/keel-commerce/keel/services/kit/httpapi/edgetest"
)

// The document states the rule for every string a client sends.
func TestOpenAPIStatesStringRule(t *testing.T) { edgetest.Document(t, checkouthttp.OpenAPI) }
