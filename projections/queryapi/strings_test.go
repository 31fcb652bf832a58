package queryapi_test

import (
	"encoding/base64"
	"io"
	"net/http"
	"testing"

	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/projections/queryapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/edgetest"
)

// The string rule at the query API (issue 9, defects 1 and 6): a NUL or a
// malformed id in a path, a filter or a cursor is a 400 naming it, never a
// 500 from PostgreSQL; unknown routes are problems.
func TestStringRule(t *testing.T) {
	srv := server(t)
	do := func(t *testing.T, method, path, _ string) (int, string, []byte) {
		req, err := http.NewRequest(method, srv.URL+path, nil)
		testenv.Must(t, err, "request")
		res, err := http.DefaultClient.Do(req)
		testenv.Must(t, err, "%s %s", method, path)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header.Get("Content-Type"), b
	}
	nulCursor := base64.RawURLEncoding.EncodeToString([]byte("1764000000000000:o\x001"))
	edgetest.Run(t, do, []edgetest.Case{
		{Name: "NUL in an order id", Method: "GET", Path: "/orders/a%00b", Status: 400, Field: "id"},
		{Name: "NUL in a customer id", Method: "GET", Path: "/customers/a%00b/orders", Status: 400, Field: "id"},
		{Name: "NUL in a SKU", Method: "GET", Path: "/stock/a%00b", Status: 400, Field: "sku"},
		{Name: "NUL in a filter", Method: "GET", Path: "/checkouts?cart_id=%00", Status: 400, Field: "cart_id"},
		{Name: "customer filter not an id", Method: "GET", Path: "/orders?customer_id=a%20b", Status: 400, Field: "customer_id"},
		{Name: "NUL inside a cursor", Method: "GET", Path: "/orders?cursor=" + nulCursor, Status: 400, Field: "cursor"},
		{Name: "unknown route", Method: "GET", Path: "/nowhere", Status: 404},
		{Name: "wrong method", Method: "POST", Path: "/orders", Status: 405},
		{Name: "an id the rule admits", Method: "GET", Path: "/orders/" + edgetest.ID(128), Status: 404},
		{Name: "a filter the rule admits", Method: "GET", Path: "/orders?customer_id=" + edgetest.ID(128), Status: 200},
	})
}

// The document states the rule for every string a client sends.
func TestOpenAPIStatesStringRule(t *testing.T) { edgetest.Document(t, queryapi.OpenAPI) }
