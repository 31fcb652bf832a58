package openapitest_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/httpapi/openapitest"
)

const doc = `{
  "openapi": "3.0.3",
  "info": {"title": "t", "version": "1"},
  "paths": {
    "/things/{id}": {
      "get": {
        "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
        "responses": {
          "200": {"description": "ok", "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": false, "required": ["id", "n"],
            "properties": {"id": {"type": "string"}, "n": {"type": "integer"}}}}}},
          "404": {"description": "none", "content": {"application/problem+json": {"schema": {"type": "object"}}}}
        }
      }
    },
    "/things": {
      "post": {
        "requestBody": {"required": true, "content": {"application/json": {"schema": {
          "type": "object", "additionalProperties": false, "required": ["n"],
          "properties": {"n": {"type": "integer", "minimum": 1}}}}}},
        "responses": {
          "201": {"description": "made"},
          "400": {"description": "bad", "content": {"application/problem+json": {"schema": {"type": "object"}}}},
          "422": {"description": "invalid", "content": {"application/problem+json": {"schema": {"type": "object"}}}}
        }
      }
    }
  }
}`

// recorder is a testing.TB that keeps what the checker reports.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// fixed answers every request with the given status, content type and body.
func fixed(status int, ctype, body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ctype != "" {
			w.Header().Set("Content-Type", ctype)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	})
}

func TestChecker(t *testing.T) {
	problem := httpapi.ContentTypeProblem
	tests := []struct {
		name    string
		method  string
		path    string
		body    string
		handler http.Handler
		beyond  []string
		want    string // a substring of the reported error; "" means no error
	}{
		{name: "valid response", method: "GET", path: "/things/a", handler: fixed(200, "application/json", `{"id":"a","n":1}`)},
		{name: "wrong property type", method: "GET", path: "/things/a", handler: fixed(200, "application/json", `{"id":"a","n":"1"}`),
			want: "the response does not match the document"},
		{name: "extra property", method: "GET", path: "/things/a", handler: fixed(200, "application/json", `{"id":"a","n":1,"x":2}`),
			want: "the response does not match the document"},
		{name: "undocumented status", method: "GET", path: "/things/a", handler: fixed(409, problem, `{}`),
			want: "status is not supported"},
		{name: "undocumented content type", method: "GET", path: "/things/a", handler: fixed(404, "text/plain", `no`),
			want: "the response does not match the document"},
		{name: "documented problem", method: "GET", path: "/things/a", handler: fixed(404, problem, `{}`)},
		{name: "forbidden request accepted", method: "POST", path: "/things", body: `{"n":0}`, handler: fixed(201, "", ""),
			want: "the document forbids this request"},
		{name: "forbidden request refused", method: "POST", path: "/things", body: `{"n":0}`, handler: fixed(422, problem, `{}`)},
		{name: "allowed request refused as malformed", method: "POST", path: "/things", body: `{"n":2}`, handler: fixed(400, problem, `{}`),
			want: "tighten the document"},
		{name: "trailing data refused", method: "POST", path: "/things", body: `{"n":2}{}`, handler: fixed(400, problem, `{}`)},
		{name: "allowed request refused by a rule", method: "POST", path: "/things", body: `{"n":2}`, handler: fixed(422, problem, `{}`)},
		{name: "opaque parameter refused", method: "POST", path: "/things?cursor=zz", body: `{"n":2}`, handler: fixed(400, problem, `{}`),
			want: "tighten the document"},
		{name: "opaque parameter refused, declared beyond", method: "POST", path: "/things?cursor=zz", body: `{"n":2}`, handler: fixed(400, problem, `{}`),
			beyond: []string{"cursor"}},
		{name: "undocumented route answered", method: "GET", path: "/other", handler: fixed(200, "application/json", `{}`),
			want: "the document has no such operation"},
		{name: "undocumented route refused", method: "GET", path: "/other", handler: fixed(404, problem, `{}`)},
		{name: "plain-text 404", method: "GET", path: "/other", handler: fixed(404, "text/plain", `404 page not found`),
			want: "the document has no such operation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &recorder{TB: t}
			h := openapitest.New(rt, []byte(doc)).Beyond(tt.beyond...).Handler(tt.handler)
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
			if tt.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			// The client sees the handler's answer unchanged.
			want := httptest.NewRecorder()
			tt.handler.ServeHTTP(want, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != want.Code || rec.Body.String() != want.Body.String() || rec.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
				t.Errorf("the wrapped handler answered %d %q, the handler %d %q", rec.Code, rec.Body, want.Code, want.Body)
			}
			got := strings.Join(rt.errs, "\n")
			switch {
			case tt.want == "" && got != "":
				t.Errorf("reported %s, want nothing", got)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Errorf("reported %q, want it to contain %q", got, tt.want)
			}
		})
	}
}

// fatal is a testing.TB whose Fatalf is kept, not fatal.
type fatal struct {
	recorder
	msg string
}

func (f *fatal) Fatalf(format string, args ...any) { f.msg = fmt.Sprintf(format, args...) }

func TestKeyedOperationsDocumentTheKeysAnswers(t *testing.T) {
	keyed := strings.Replace(doc, `"post": {
        "requestBody"`, `"post": {
        "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}],
        "requestBody"`, 1)
	f := &fatal{recorder: recorder{TB: t}}
	openapitest.New(f, []byte(keyed))
	if !strings.Contains(f.msg, "POST /things takes an Idempotency-Key but does not document 409") ||
		!strings.Contains(f.msg, "does not document 413") || strings.Contains(f.msg, "document 422") {
		t.Errorf("New reported %q, want 409 and 413 missing", f.msg)
	}
}

func TestLoadRefusesAnInvalidDocument(t *testing.T) {
	bad := strings.Replace(doc, `"type": "integer", "minimum": 1`, `"type": "integer", "minimum": "one"`, 1)
	if _, err := openapitest.Load([]byte(bad)); err == nil {
		t.Error("a document with a string minimum loads")
	}
	if _, err := openapitest.Load([]byte(doc)); err != nil {
		t.Errorf("the test document: %v", err)
	}
}
