package stockhttp_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/keel-commerce/keel/services/kit/httpapi"
	stockhttp "github.com/keel-commerce/keel/services/stock/adapters/http"
)

type schema struct {
	Ref                  string             `json:"$ref"`
	Type                 string             `json:"type"`
	Properties           map[string]*schema `json:"properties"`
	Required             []string           `json:"required"`
	Items                *schema            `json:"items"`
	AdditionalProperties *bool              `json:"additionalProperties"`
}

type operation struct {
	RequestBody *struct {
		Content map[string]struct {
			Schema *schema `json:"schema"`
		} `json:"content"`
	} `json:"requestBody"`
	Responses map[string]json.RawMessage `json:"responses"`
}

type document struct {
	OpenAPI    string                          `json:"openapi"`
	Paths      map[string]map[string]operation `json:"paths"`
	Components struct {
		Schemas map[string]*schema `json:"schemas"`
	} `json:"components"`
}

func loadDoc(t *testing.T) document {
	t.Helper()
	var d document
	if err := json.Unmarshal(stockhttp.OpenAPI, &d); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(d.OpenAPI, "3.0.") {
		t.Fatalf("openapi = %q, want 3.0.x", d.OpenAPI)
	}
	return d
}

func (d document) resolve(t *testing.T, s *schema) *schema {
	t.Helper()
	if s == nil || s.Ref == "" {
		return s
	}
	name := strings.TrimPrefix(s.Ref, "#/components/schemas/")
	r, ok := d.Components.Schemas[name]
	if !ok {
		t.Fatalf("dangling $ref %s", s.Ref)
	}
	return r
}

// concrete fills a path template with values that pass validation.
func concrete(path string) string {
	return strings.NewReplacer("{sku}", "SKU-1", "{order_id}", "o-1").Replace(path)
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	d := loadDoc(t)
	var documented []string
	for path, ops := range d.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	sort.Strings(documented)
	routes := slices.Sorted(slices.Values(stockhttp.Routes))
	if !slices.Equal(documented, routes) {
		t.Fatalf("documented %v\nrouted     %v", documented, routes)
	}
	// Register mounts exactly Routes: each resolves to its own pattern.
	e := setup(t)
	for _, rt := range routes {
		method, path, _ := strings.Cut(rt, " ")
		r := httptest.NewRequest(method, concrete(path), nil)
		if _, pattern := e.mux.Handler(r); pattern != rt {
			t.Errorf("%s %s is routed to %q, want %q", method, concrete(path), pattern, rt)
		}
	}
	// And /openapi.json serves the document.
	rec := e.do(req{method: "GET", path: "/openapi.json"})
	if rec.Code != 200 || rec.Body.String() != string(stockhttp.OpenAPI) {
		t.Errorf("/openapi.json = %d", rec.Code)
	}
}

// requestTypes are the Go types each documented request schema decodes into.
var requestTypes = map[string]any{
	"ReceiveRequest": stockhttp.ReceiveRequest{},
	"AdjustRequest":  stockhttp.AdjustRequest{},
	"ReserveRequest": stockhttp.ReserveRequest{},
	"Line":           stockhttp.LineRequest{},
	"ReleaseRequest": stockhttp.ReleaseRequest{},
	"CommitRequest":  stockhttp.CommitRequest{},
}

func jsonFields(v any) []string {
	var out []string
	rt := reflect.TypeOf(v)
	for i := range rt.NumField() {
		f := rt.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// TestOpenAPIRequestSchemas checks each documented request body against
// the handler: the same properties as the Go type, closed to unknown
// fields (and the handler refuses one with a 400), and the required
// properties are those the handler reports missing for an empty object.
func TestOpenAPIRequestSchemas(t *testing.T) {
	d := loadDoc(t)
	e := setup(t)
	checked := map[string]bool{}
	var walk func(name string, s *schema)
	walk = func(name string, s *schema) {
		if s.Ref != "" {
			n := strings.TrimPrefix(s.Ref, "#/components/schemas/")
			walk(n, d.resolve(t, s))
			return
		}
		switch s.Type {
		case "object":
			if s.AdditionalProperties == nil || *s.AdditionalProperties {
				t.Errorf("schema %s: additionalProperties must be false (the handler refuses unknown fields)", name)
			}
			if checked[name] {
				return
			}
			checked[name] = true
			goType, ok := requestTypes[name]
			if !ok {
				t.Errorf("schema %s: no Go request type mapped to it", name)
			} else {
				props := slices.Sorted(func(yield func(string) bool) {
					for k := range s.Properties {
						if !yield(k) {
							return
						}
					}
				})
				if want := jsonFields(goType); !slices.Equal(props, want) {
					t.Errorf("schema %s properties %v, Go type %T fields %v", name, props, goType, want)
				}
			}
			for pn, p := range s.Properties {
				walk(name+"."+pn, p)
			}
		case "array":
			if s.Items != nil {
				walk(name+"[]", s.Items)
			}
		}
	}
	for path, ops := range d.Paths {
		for method, op := range ops {
			if op.RequestBody == nil {
				continue
			}
			media, ok := op.RequestBody.Content["application/json"]
			if !ok || media.Schema == nil {
				t.Errorf("%s %s: request body is not application/json", method, path)
				continue
			}
			walk(strings.TrimPrefix(media.Schema.Ref, "#/components/schemas/"), media.Schema)
			body := d.resolve(t, media.Schema)
			for _, code := range []string{"400", "413", "415", "422"} {
				if _, ok := op.Responses[code]; !ok {
					t.Errorf("%s %s: response %s is not documented", method, path, code)
				}
			}

			// Unknown field: 400, as additionalProperties: false says.
			rec := e.do(req{method: strings.ToUpper(method), path: concrete(path), body: `{"zz_unknown":1}`})
			if rec.Code != http.StatusBadRequest {
				t.Errorf("%s %s with an unknown field: %d, want 400", method, path, rec.Code)
			} else if p := problem(t, rec); p.Type != httpapi.TypeMalformed || !strings.Contains(p.Detail, `"zz_unknown"`) {
				t.Errorf("%s %s with an unknown field: %+v", method, path, p)
			}

			// Empty object: the 422 names exactly the required properties.
			if len(body.Required) == 0 {
				continue
			}
			rec = e.do(req{method: strings.ToUpper(method), path: concrete(path), body: `{}`})
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
	for name := range requestTypes {
		if !checked[name] {
			t.Errorf("request type %s is not reachable from any documented request body", name)
		}
	}
}
