package openapitest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/keel-commerce/keel/services/kit/httpapi"
)

// FuzzBodies is a go test -fuzz target over the request bodies of a
// document's operations. types maps each operation with a JSON body
// ("POST /stock/{sku}/receive") to a function returning a fresh pointer to
// the Go type its handler decodes into. For every body the fuzzer makes,
// httpapi.Decode (with the type's Validate) must not panic, must answer
// nil or a 400, 413, 415 or 422 problem, and must accept only what the
// document's schema allows: a body the server takes and its document
// forbids fails. The corpus is seeded with {} and each operation's
// documented example.
func FuzzBodies(f *testing.F, spec []byte, types map[string]func() any) {
	f.Helper()
	doc, err := Load(spec)
	if err != nil {
		f.Fatalf("openapi document: %v", err)
	}
	type op struct {
		name   string
		schema *openapi3.Schema
		dst    func() any
	}
	var ops []op
	for path, item := range doc.Paths.Map() {
		for method, o := range item.Operations() {
			if o.RequestBody == nil || o.RequestBody.Value == nil {
				continue
			}
			name := method + " " + path
			media := o.RequestBody.Value.Content.Get("application/json")
			dst, ok := types[name]
			if !ok || media == nil || media.Schema == nil {
				f.Fatalf("%s: no Go type for its JSON body (or no JSON body)", name)
			}
			ops = append(ops, op{name: name, schema: media.Schema.Value, dst: dst})
		}
	}
	if len(ops) != len(types) {
		f.Fatalf("%d operations with a JSON body documented, %d Go types given", len(ops), len(types))
	}
	slices.SortFunc(ops, func(a, b op) int { return strings.Compare(a.name, b.name) })
	for i, o := range ops {
		f.Add(uint8(i), []byte(`{}`))
		if o.schema.Example != nil {
			if b, err := json.Marshal(o.schema.Example); err == nil {
				f.Add(uint8(i), b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, i uint8, body []byte) {
		o := ops[int(i)%len(ops)]
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		p := httpapi.Decode(httptest.NewRecorder(), r, o.dst())
		if p != nil {
			if !slices.Contains([]int{400, 413, 415, 422}, p.Status) {
				t.Fatalf("%s: Decode answered %d for %q", o.name, p.Status, body)
			}
			return
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("%s: Decode accepted %q, which is not JSON: %v", o.name, body, err)
		}
		if err := o.schema.VisitJSON(v, openapi3.MultiErrors()); err != nil {
			t.Fatalf("%s: Decode accepted %q, which the document forbids: %v", o.name, body, err)
		}
	})
}
