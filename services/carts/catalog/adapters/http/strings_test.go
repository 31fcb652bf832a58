package api_test

import (
	"fmt"
	"testing"

	api "github.com/keel-commerce/keel/services/carts/catalog/adapters/http"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/edgetest"
)

// The string rule at the catalog edge (issue 9, defects 1 and 6).
func TestStringRule(t *testing.T) {
	e := newEnv(t)
	do := edgetest.Client(e.do)
	before := e.events(t)
	edgetest.Run(t, do, []edgetest.Case{
		{Name: "NUL in the after cursor", Method: "GET", Path: "/products?after=%00", Status: 400, Field: "after"},
		{Name: "after not a SKU", Method: "GET", Path: "/products?after=a%20b", Status: 400, Field: "after"},
		{Name: "NUL in the path", Method: "GET", Path: "/products/a%00b", Status: 400, Field: "sku"},
		{Name: "NUL in a name", Method: "POST", Path: "/products", Body: `{"sku":"S-1","name":"K\u0000","unit_price":{"amount_minor":1,"currency":"EUR"}}`, Status: 422, Field: "name"},
		{Name: "NUL in command_id", Method: "POST", Path: "/products", Body: `{"command_id":"\u0000","sku":"S-1","name":"K","unit_price":{"amount_minor":1,"currency":"EUR"}}`, Status: 422, Field: "command_id"},
		{Name: "unknown route", Method: "DELETE", Path: "/products", Status: 405},
	})
	if n := e.events(t); n != before {
		t.Errorf("refused requests stored %d events", n-before)
	}
	edgetest.Run(t, do, []edgetest.Case{{Name: "longest values", Method: "POST", Path: "/products", Status: 201,
		Body: fmt.Sprintf(`{"command_id":%q,"sku":%q,"name":%q,"unit_price":{"amount_minor":1,"currency":"EUR"}}`,
			edgetest.ID(128), edgetest.ID(64), edgetest.Long(httpapi.MaxName))}})
}

// The document states the rule for every string a client sends.
func TestOpenAPIStatesStringRule(t *testing.T) { edgetest.Document(t, api.OpenAPI) }
