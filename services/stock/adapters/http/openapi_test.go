package stockhttp_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
	stockhttp "github.com/keel-commerce/keel/services/stock/adapters/http"
)

// concrete fills a path template with values that pass validation.
func concrete(path string) string {
	return strings.NewReplacer("{sku}", "SKU-1", "{order_id}", "o-1").Replace(path)
}

// opsRoutes are the routes httpapi.Ops adds to every service.
var opsRoutes = []string{"GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json"}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc, err := openapitest.Load(stockhttp.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	sort.Strings(documented)
	routes := slices.Sorted(slices.Values(append(slices.Clone(stockhttp.Routes), opsRoutes...)))
	if !slices.Equal(documented, routes) {
		t.Fatalf("documented %v\nrouted     %v", documented, routes)
	}
	// Register mounts exactly Routes: each resolves to its own pattern.
	e := setup(t)
	for _, rt := range stockhttp.Routes {
		method, path, _ := strings.Cut(rt, " ")
		r := httptest.NewRequest(method, concrete(path), nil)
		if _, pattern := e.mux.Handler(r); pattern != rt {
			t.Errorf("%s %s is routed to %q, want %q", method, concrete(path), pattern, rt)
		}
	}
	// And every ops route answers as documented (the checker in e.do
	// validates each answer), /openapi.json with the document itself.
	for _, rt := range opsRoutes {
		method, path, _ := strings.Cut(rt, " ")
		if rec := e.do(req{method: method, path: path}); rec.Code != http.StatusOK {
			t.Errorf("%s = %d", rt, rec.Code)
		} else if path == "/openapi.json" && rec.Body.String() != string(stockhttp.OpenAPI) {
			t.Errorf("/openapi.json does not serve the document")
		}
	}
}

// TestOpenAPIRequestBodies sends each documented request body an unknown
// field and an empty object: the checker in e.do fails the test if the
// server accepts what the document forbids; the 400 names the field, and
// the 422 names exactly the properties the document requires.
func TestOpenAPIRequestBodies(t *testing.T) {
	doc, err := openapitest.Load(stockhttp.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	e := setup(t)
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.RequestBody == nil {
				continue
			}
			media := op.RequestBody.Value.Content.Get("application/json")
			if media == nil || media.Schema == nil {
				t.Errorf("%s %s: request body is not application/json", method, path)
				continue
			}
			body := media.Schema.Value
			if body.AdditionalProperties.Has == nil || *body.AdditionalProperties.Has {
				t.Errorf("%s %s: additionalProperties must be false (the handler refuses unknown fields)", method, path)
			}

			rec := e.do(req{method: method, path: concrete(path), body: `{"zz_unknown":1}`})
			if rec.Code != http.StatusBadRequest {
				t.Errorf("%s %s with an unknown field: %d, want 400", method, path, rec.Code)
			} else if p := problem(t, rec); p.Type != httpapi.TypeMalformed || !strings.Contains(p.Detail, `"zz_unknown"`) {
				t.Errorf("%s %s with an unknown field: %+v", method, path, p)
			}

			if len(body.Required) == 0 {
				continue
			}
			rec = e.do(req{method: method, path: concrete(path), body: `{}`})
			if rec.Code != http.StatusUnprocessableEntity {
				t.Errorf("%s %s with {}: %d, want 422", method, path, rec.Code)
				continue
			}
			var missing []string
			for _, fe := range problem(t, rec).Errors {
				if strings.HasPrefix(fe.Message, "is required") {
					missing = append(missing, fe.Field)
				}
			}
			sort.Strings(missing)
			if want := slices.Sorted(slices.Values(body.Required)); !slices.Equal(missing, want) {
				t.Errorf("%s %s: required %v documented, handler requires %v", method, path, want, missing)
			}
		}
	}
}
