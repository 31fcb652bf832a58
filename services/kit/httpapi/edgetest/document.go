package edgetest

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/keel-commerce/keel/services/kit/httpapi"
)

// Document checks that an OpenAPI 3.0 document states the string rule for
// every string a client sends: each string in a request body and each path
// or query parameter has a pattern (or an enum, or a date-time format);
// free text (httpapi.TextPattern) in a body has a maxLength; a required
// string cannot be empty; and each pattern compiles with Go's regexp, as
// kin-openapi compiles it.
func Document(t *testing.T, doc []byte) {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatalf("openapi document: %v", err)
	}
	comps, _ := d["components"].(map[string]any)
	resolve := func(v map[string]any) map[string]any {
		for i := 0; i < 8; i++ {
			ref, ok := v["$ref"].(string)
			if !ok {
				return v
			}
			parts := strings.Split(strings.TrimPrefix(ref, "#/components/"), "/")
			kind, _ := comps[parts[0]].(map[string]any)
			v, _ = kind[parts[1]].(map[string]any)
		}
		return v
	}
	check := func(where string, s map[string]any, required, body bool) {
		if s["type"] != "string" || s["enum"] != nil || s["format"] == "date-time" {
			return
		}
		p, ok := s["pattern"].(string)
		if !ok {
			t.Errorf("%s: a string without a pattern", where)
			return
		}
		re, err := regexp.Compile(p)
		if err != nil {
			t.Errorf("%s: pattern %q: %v", where, p, err)
			return
		}
		if _, ok := s["maxLength"]; body && !ok && p == httpapi.TextPattern {
			t.Errorf("%s: free text without a maxLength", where)
		}
		if min, _ := s["minLength"].(float64); required && min < 1 && re.MatchString("") {
			t.Errorf("%s: required, but the document allows an empty string", where)
		}
	}
	seen := map[string]bool{}
	var walk func(where string, s map[string]any, required bool)
	walk = func(where string, s map[string]any, required bool) {
		if ref, ok := s["$ref"].(string); ok {
			if seen[ref] {
				return
			}
			seen[ref] = true
			s = resolve(s)
		}
		if items, ok := s["items"].(map[string]any); ok {
			walk(where+".items", items, true)
			return
		}
		req := map[string]bool{}
		if rs, ok := s["required"].([]any); ok {
			for _, r := range rs {
				req[r.(string)] = true
			}
		}
		if props, ok := s["properties"].(map[string]any); ok {
			for name, ps := range props {
				walk(where+"."+name, ps.(map[string]any), req[name])
			}
			return
		}
		check(where, s, required, true)
	}
	paths, _ := d["paths"].(map[string]any)
	for path, ops := range paths {
		for method, op := range ops.(map[string]any) {
			o, ok := op.(map[string]any)
			if !ok {
				continue
			}
			where := strings.ToUpper(method) + " " + path
			if rb, ok := o["requestBody"].(map[string]any); ok {
				if s, ok := rb["content"].(map[string]any)["application/json"].(map[string]any)["schema"].(map[string]any); ok {
					walk(where+" body", s, true)
				}
			}
			params, _ := o["parameters"].([]any)
			for _, prm := range params {
				p := resolve(prm.(map[string]any))
				in, _ := p["in"].(string)
				if in != "path" && in != "query" {
					continue
				}
				req, _ := p["required"].(bool)
				s, _ := p["schema"].(map[string]any)
				check(where+" "+in+" "+p["name"].(string), s, req, false)
			}
		}
	}
}
