package api_test

import (
	"fmt"
	"strings"
	"testing"

	api "github.com/keel-commerce/keel/services/carts/adapters/http"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/edgetest"
)

// The string rule at the carts edge (issue 9, defects 1, 2 and 6): a NUL or
// another control character anywhere gets a 4xx naming the field or the
// parameter and stores nothing; unknown routes are problems; the longest
// values the rule admits, in any script, are accepted.
func TestStringRule(t *testing.T) {
	e := newEnv(t)
	do := edgetest.Client(e.do)
	if res, b := e.do(t, "POST", "/carts", js, `{"cart_id":"s1","currency":"EUR"}`); res.StatusCode != 201 {
		t.Fatalf("create: %d %s", res.StatusCode, b)
	}
	before := e.events(t)
	edgetest.Run(t, do, []edgetest.Case{
		{Name: "NUL in command_id", Method: "POST", Path: "/carts", Body: `{"command_id":"n\u0000ul","currency":"EUR"}`, Status: 422, Field: "command_id"},
		{Name: "NUL in customer_id", Method: "POST", Path: "/carts", Body: `{"currency":"EUR","customer_id":"c\u0000x"}`, Status: 422, Field: "customer_id"},
		{Name: "customer_id not an identifier", Method: "POST", Path: "/carts", Body: `{"currency":"EUR","customer_id":"c x"}`, Status: 422, Field: "customer_id"},
		{Name: "NUL in the path", Method: "GET", Path: "/carts/a%00b", Status: 400, Field: "id"},
		{Name: "NUL in a line's path", Method: "DELETE", Path: "/carts/s1/lines/a%00b", Status: 400, Field: "sku"},
		{Name: "control character in the token", Method: "POST", Path: "/carts/s1/checkout",
			Body: strings.Replace(checkoutBody, "tok_visa", `t\u0000k`, 1), Status: 422, Field: "payment_method.token"},
		{Name: "tab in an address line", Method: "POST", Path: "/carts/s1/checkout",
			Body: strings.Replace(checkoutBody, "1 Main St", `1\tMain St`, 1), Status: 422, Field: "shipping_address.line1"},
		{Name: "address line too long", Method: "POST", Path: "/carts/s1/checkout",
			Body: strings.Replace(checkoutBody, "1 Main St", edgetest.Long(httpapi.MaxName+1), 1), Status: 422, Field: "shipping_address.line1"},
		{Name: "unknown route", Method: "GET", Path: "/carts", Status: 405},
		{Name: "unknown path", Method: "GET", Path: "/nowhere", Status: 404},
	})
	if n := e.events(t); n != before {
		t.Errorf("refused requests stored %d events", n-before)
	}
	// The longest values the rule admits, in mixed scripts and emoji.
	cart := edgetest.ID(httpapi.MaxIDLength)
	edgetest.Run(t, do, []edgetest.Case{
		{Name: "longest ids", Method: "POST", Path: "/carts", Status: 201,
			Body: fmt.Sprintf(`{"command_id":%q,"cart_id":%q,"customer_id":%q,"currency":"EUR"}`, edgetest.ID(128), cart, edgetest.ID(128))},
		{Name: "a line", Method: "POST", Path: "/carts/" + cart + "/lines", Status: 200, Body: `{"sku":"SKU-002","quantity":1}`},
		{Name: "checkout id too long for the ids made from it", Method: "POST", Path: "/carts/" + cart + "/checkout", Status: 422, Field: "checkout_id",
			Body: strings.Replace(checkoutBody, `{"customer"`, `{"checkout_id":"`+edgetest.ID(65)+`","customer"`, 1)},
		{Name: "longest free text", Method: "POST", Path: "/carts/" + cart + "/checkout", Status: 200, Body: fmt.Sprintf(
			`{"checkout_id":%q,"customer":{"customer_id":%q,"email":%q,"name":%q},
			 "shipping_address":{"name":%q,"line1":%q,"line2":%q,"city":%q,"region":%q,"postal_code":%q,"country_code":"DE"},
			 "payment_method":{"kind":"card","token":%q}}`,
			edgetest.ID(api.MaxCheckoutID), edgetest.ID(128), edgetest.Long(httpapi.MaxEmail-2)+"@x", edgetest.Long(httpapi.MaxName),
			edgetest.Long(httpapi.MaxName), edgetest.Long(httpapi.MaxName), edgetest.Long(httpapi.MaxName), edgetest.Long(httpapi.MaxShortText),
			edgetest.Long(httpapi.MaxShortText), edgetest.Long(httpapi.MaxPostalCode), edgetest.Long(httpapi.MaxToken))},
	})
}

// The document states the rule for every string a client sends.
func TestOpenAPIStatesStringRule(t *testing.T) { edgetest.Document(t, api.OpenAPI) }
