package api_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/edgetest"
	api "github.com/keel-commerce/keel/services/orders/adapters/http"
)

// The string rule at the orders edge (issue 9, defects 1 and 6).
func TestStringRule(t *testing.T) {
	e := newEnv(t)
	do := edgetest.Client(e.do)
	edgetest.Run(t, do, []edgetest.Case{{Name: "an order", Method: "POST", Path: "/orders", Body: place("c0", goodLines), Status: 201}})
	before := e.events(t)
	edgetest.Run(t, do, []edgetest.Case{
		{Name: "NUL in command_id", Method: "POST", Path: "/orders/order-c0/cancel", Body: `{"command_id":"x\u0000y","reason":"customer"}`, Status: 422, Field: "command_id"},
		{Name: "NUL in the path", Method: "GET", Path: "/orders/a%00b", Status: 400, Field: "id"},
		{Name: "control character in a line's name", Method: "POST", Path: "/orders",
			Body: place("c1", `[{"sku":"a","name":"K\u0085","quantity":1,"unit_price":{"amount_minor":1,"currency":"EUR"}}]`), Status: 422, Field: "lines.0.name"},
		{Name: "detail too long", Method: "POST", Path: "/orders/order-c0/cancel",
			Body: fmt.Sprintf(`{"reason":"customer","detail":%q}`, edgetest.Long(httpapi.MaxNote+1)), Status: 422, Field: "detail"},
		{Name: "unknown route", Method: "GET", Path: "/orders", Status: 405},
		{Name: "checkout id too long for its order id", Method: "POST", Path: "/orders", Body: place(edgetest.ID(65), goodLines), Status: 422, Field: "checkout_id"},
	})
	if n := e.events(t); n != before {
		t.Errorf("refused requests stored %d events", n-before)
	}
	long := place(edgetest.ID(64), `[{"sku":"SKU-1","name":"`+edgetest.Long(httpapi.MaxName)+`","quantity":1,"unit_price":{"amount_minor":1,"currency":"EUR"}}]`)
	long = strings.Replace(long, `"line1":"1 Road"`, `"line1":"`+edgetest.Long(httpapi.MaxName)+`","line2":"`+edgetest.Long(httpapi.MaxName)+`","postal_code":"`+edgetest.Long(httpapi.MaxPostalCode)+`"`, 1)
	long = strings.Replace(long, `"customer_id":"cus-1"`, `"customer_id":"`+edgetest.ID(128)+`","name":"`+edgetest.Long(httpapi.MaxName)+`"`, 1)
	edgetest.Run(t, do, []edgetest.Case{
		{Name: "longest values", Method: "POST", Path: "/orders", Body: long, Status: 201},
		{Name: "longest cancel detail", Method: "POST", Path: "/orders/order-c0/cancel",
			Body: fmt.Sprintf(`{"command_id":%q,"reason":"customer","detail":%q}`, edgetest.ID(128), edgetest.Long(httpapi.MaxNote)), Status: 200},
	})
}

// The document states the rule for every string a client sends.
func TestOpenAPIStatesStringRule(t *testing.T) { edgetest.Document(t, api.OpenAPI) }
