package stockhttp_test

import (
	"fmt"
	"testing"

	"github.com/keel-commerce/keel/services/kit/httpapi/edgetest"
	stockhttp "github.com/keel-commerce/keel/services/stock/adapters/http"
)

// The string rule at the stock edge (issue 9, defects 1 and 6): counted in
// characters, no control character in any field, stock's stricter SKU
// pattern kept.
func TestStringRule(t *testing.T) {
	e := setup(t)
	do := func(t *testing.T, method, path, body string) (int, string, []byte) {
		rec := e.do(req{method: method, path: path, body: body})
		return rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes()
	}
	before := e.count("events")
	edgetest.Run(t, do, []edgetest.Case{
		{Name: "NUL in command_id", Method: "POST", Path: "/stock/SKU-1/receive", Body: `{"command_id":"c\u0000","warehouse_id":"wh-1","quantity":1}`, Status: 422, Field: "command_id"},
		{Name: "NUL in a note", Method: "POST", Path: "/stock/SKU-1/adjust", Body: `{"warehouse_id":"wh-1","delta":1,"reason":"found","note":"n\u0000"}`, Status: 422, Field: "note"},
		{Name: "note too long", Method: "POST", Path: "/stock/SKU-1/adjust", Body: fmt.Sprintf(`{"warehouse_id":"wh-1","delta":1,"reason":"found","note":%q}`, edgetest.Long(1025)), Status: 422, Field: "note"},
		{Name: "unknown route", Method: "GET", Path: "/reservations", Status: 405},
	})
	if n := e.count("events"); n != before {
		t.Errorf("refused requests stored %d events", n-before)
	}
	edgetest.Run(t, do, []edgetest.Case{
		{Name: "longest values", Method: "POST", Path: "/stock/SKU-1/adjust", Status: 200, Body: fmt.Sprintf(
			`{"command_id":%q,"warehouse_id":%q,"delta":1,"reason":"found","note":%q}`, edgetest.ID(128), edgetest.ID(128), edgetest.Long(1024))},
		{Name: "longest reference", Method: "POST", Path: "/stock/SKU-1/receive", Status: 200, Body: fmt.Sprintf(
			`{"warehouse_id":"wh-1","quantity":1,"reference":%q}`, edgetest.Long(256))},
		// The widest count a warehouse holds, and not one more: on hand
		// would wrap negative here and in the read models.
		{Name: "the int64's maximum", Method: "POST", Path: "/stock/BIG/receive", Status: 200, Body: `{"warehouse_id":"wh-1","quantity":9223372036854775807}`},
		{Name: "past the int64 (a conflict with what the SKU holds)", Method: "POST", Path: "/stock/BIG/receive", Status: 409, Body: `{"warehouse_id":"wh-1","quantity":1}`},
	})
}

// The document states the rule for every string a client sends.
func TestOpenAPIStatesStringRule(t *testing.T) { edgetest.Document(t, stockhttp.OpenAPI) }
