package api_test

import (
	"strings"
	"testing"

	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/edgetest"
	api "github.com/keel-commerce/keel/services/payments/adapters/http"
	"github.com/keel-commerce/keel/services/payments/gateway/sim"
)

// The string rule at the payments edge (issue 9, defects 1, 2 and 6).
func TestStringRule(t *testing.T) {
	e := newEnv(t, sim.Config{Seed: 1})
	do := edgetest.Client(e.do)
	before := e.events(t)
	edgetest.Run(t, do, []edgetest.Case{
		{Name: "NUL in the token", Method: "POST", Path: "/payments", Body: strings.Replace(auth("p1", "100"), `"tok"`, `"t\u0000k"`, 1), Status: 422, Field: "method.token"},
		{Name: "NUL in the path", Method: "GET", Path: "/payments/a%00b", Status: 400, Field: "id"},
		{Name: "NUL in a refund reason", Method: "POST", Path: "/payments/p1/refund",
			Body: `{"amount":{"amount_minor":1,"currency":"EUR"},"reason":"r\u0000"}`, Status: 422, Field: "reason"},
		{Name: "unknown route", Method: "GET", Path: "/payments", Status: 405},
	})
	if n := e.events(t); n != before {
		t.Errorf("refused requests stored %d events", n-before)
	}
	edgetest.Run(t, do, []edgetest.Case{{Name: "longest values", Method: "POST", Path: "/payments", Status: 201,
		Body: strings.Replace(auth(edgetest.ID(128), "100"), `"tok"`, `"`+edgetest.Long(httpapi.MaxToken)+`"`, 1)}})
}

// The document states the rule for every string a client sends.
func TestOpenAPIStatesStringRule(t *testing.T) { edgetest.Document(t, api.OpenAPI) }
