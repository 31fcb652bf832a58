package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/keel-commerce/keel/services/kit/httpapi"
)

// receiveStock is a typical command body.
type receiveStock struct {
	SKU       string `json:"sku"`
	Warehouse string `json:"warehouse"`
	Quantity  int    `json:"quantity"`
	Lines     []line `json:"lines,omitempty"`
}

type line struct {
	Qty  uint   `json:"qty"`
	Note string `json:"note,omitempty"`
}

func (c receiveStock) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	if c.SKU == "" {
		errs.Add("sku", "is required")
	}
	if c.Warehouse == "" {
		errs.Add("warehouse", "is required")
	}
	if c.Quantity <= 0 {
		errs.Add("quantity", "must be positive, got %d", c.Quantity)
	}
	return errs
}

// decodeHandler answers 204 when the body decodes, else the problem.
func decodeHandler(d httpapi.Decoder) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var cmd receiveStock
		if p := d.Decode(w, r, &cmd); p != nil {
			httpapi.WriteProblem(w, r, p)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

func TestDecode(t *testing.T) {
	const valid = `{"sku":"SKU-1","warehouse":"w1","quantity":3}`
	tests := []struct {
		name        string
		contentType string
		body        string
		maxBytes    int64
		status      int
		typ         string
		detail      []string // substrings the detail must contain
		fields      []string // the fields listed in "errors", in order
	}{
		{name: "valid", contentType: "application/json", body: valid, status: 204},
		{name: "valid with charset and whitespace", contentType: "application/json; charset=UTF-8", body: "\n " + valid + " \n", status: 204},
		{name: "malformed JSON", contentType: "application/json", body: `{"sku":"SKU-1",}`, status: 400,
			typ: httpapi.TypeMalformed, detail: []string{"malformed JSON at byte offset 16", "invalid character '}'"}},
		{name: "truncated JSON", contentType: "application/json", body: `{"sku":"SKU-1"`, status: 400,
			typ: httpapi.TypeMalformed, detail: []string{"malformed JSON", "ends at byte offset 14"}},
		{name: "unknown field", contentType: "application/json", body: `{"sku":"SKU-1","warehouse":"w1","quantity":3,"qty":1}`, status: 400,
			typ: httpapi.TypeMalformed, detail: []string{`unknown field "qty"`}, fields: []string{"qty"}},
		{name: "wrong type", contentType: "application/json", body: `{"sku":"SKU-1","warehouse":"w1","quantity":"3"}`, status: 400,
			typ: httpapi.TypeMalformed, detail: []string{`field "quantity" must be an integer`, "got string"}, fields: []string{"quantity"}},
		{name: "wrong type nested", contentType: "application/json", body: `{"sku":"S","warehouse":"w","quantity":1,"lines":[{"qty":-1}]}`, status: 400,
			typ: httpapi.TypeMalformed, detail: []string{`field "lines.qty" must be a non-negative integer`, "got number -1"}, fields: []string{"lines.qty"}},
		{name: "array instead of object", contentType: "application/json", body: `[1,2]`, status: 400,
			typ: httpapi.TypeMalformed, detail: []string{"request body must be an object, got array"}},
		{name: "null field", contentType: "application/json", body: `{"sku":null,"warehouse":"w1","quantity":3}`, status: 400,
			typ: httpapi.TypeMalformed, detail: []string{`field "sku" is null`}, fields: []string{"sku"}},
		{name: "null nested field", contentType: "application/json", body: `{"sku":"S","warehouse":"w","quantity":1,"lines":[{"qty":1},{"qty":null}]}`, status: 400,
			typ: httpapi.TypeMalformed, detail: []string{`field "lines.qty" is null`}, fields: []string{"lines.qty"}},
		{name: "null array", contentType: "application/json", body: `{"sku":"S","warehouse":"w","quantity":1,"lines":null}`, status: 400,
			typ: httpapi.TypeMalformed, detail: []string{`field "lines" is null`}, fields: []string{"lines"}},
		{name: "null element", contentType: "application/json", body: `{"sku":"S","warehouse":"w","quantity":1,"lines":[null]}`, status: 400,
			typ: httpapi.TypeMalformed, detail: []string{`field "lines" is null`}, fields: []string{"lines"}},
		{name: "the string null", contentType: "application/json", body: `{"sku":"null","warehouse":"null","quantity":3,"lines":[{"qty":2}]}`, status: 204},
		{name: "missing required fields", contentType: "application/json", body: `{"quantity":0}`, status: 422,
			typ: httpapi.TypeValidation, detail: []string{"3 invalid fields: sku, warehouse, quantity"}, fields: []string{"sku", "warehouse", "quantity"}},
		{name: "NUL in a string", contentType: "application/json", body: `{"sku":"n\u0000ul","warehouse":"w","quantity":1}`, status: 422,
			typ: httpapi.TypeValidation, detail: []string{"invalid sku: must not contain control characters (U+0000 at character 2)"}, fields: []string{"sku"}},
		{name: "control characters anywhere, with Validate's errors", contentType: "application/json",
			body: `{"sku":"a\tb","warehouse":"w\u009f","quantity":0}`, status: 422,
			typ: httpapi.TypeValidation, detail: []string{"3 invalid fields: sku, warehouse, quantity"}, fields: []string{"sku", "warehouse", "quantity"}},
		{name: "control character nested", contentType: "application/json",
			body: `{"sku":"S","warehouse":"w","quantity":1,"lines":[{"qty":1},{"qty":2,"note":"x\ny"}]}`, status: 422,
			typ: httpapi.TypeValidation, detail: []string{"invalid lines.1.note: must not contain control characters (U+000A at character 2)"}, fields: []string{"lines.1.note"}},
		{name: "raw control byte", contentType: "application/json", body: "{\"sku\":\"S\x7f\",\"warehouse\":\"w\",\"quantity\":1}", status: 422,
			typ: httpapi.TypeValidation, detail: []string{"U+007F"}, fields: []string{"sku"}},
		{name: "invalid UTF-8", contentType: "application/json", body: "{\"sku\":\"S\xff\",\"warehouse\":\"w\",\"quantity\":1}", status: 400,
			typ: httpapi.TypeMalformed, detail: []string{"not valid UTF-8 (byte offset 9)"}},
		{name: "non-ASCII text is fine", contentType: "application/json", body: `{"sku":"Grüße 😀 \u00a0","warehouse":"w","quantity":1}`, status: 204},
		{name: "one invalid field", contentType: "application/json", body: `{"sku":"S","warehouse":"w","quantity":-2}`, status: 422,
			typ: httpapi.TypeValidation, detail: []string{"invalid quantity: must be positive, got -2"}, fields: []string{"quantity"}},
		{name: "oversized body", contentType: "application/json", body: `{"sku":"` + strings.Repeat("x", 200) + `"}`, maxBytes: 100, status: 413,
			typ: httpapi.TypeTooLarge, detail: []string{"exceeds the limit of 100 bytes"}},
		{name: "oversized default", contentType: "application/json", body: `{"sku":"` + strings.Repeat("x", 70<<10) + `"}`, status: 413,
			typ: httpapi.TypeTooLarge, detail: []string{"limit of 65536 bytes (64 KiB)"}},
		{name: "wrong content type", contentType: "text/plain", body: valid, status: 415,
			typ: httpapi.TypeUnsupportedMediaType, detail: []string{`"text/plain" is not supported`, "application/json"}},
		{name: "missing content type", contentType: "", body: valid, status: 415,
			typ: httpapi.TypeUnsupportedMediaType, detail: []string{"Content-Type header is missing"}},
		{name: "wrong charset", contentType: "application/json; charset=latin1", body: valid, status: 415,
			typ: httpapi.TypeUnsupportedMediaType, detail: []string{`charset "latin1"`}},
		{name: "empty body", contentType: "application/json", body: "", status: 400,
			typ: httpapi.TypeMalformed, detail: []string{"request body is empty"}},
		{name: "whitespace body", contentType: "application/json", body: " \n\t", status: 400,
			typ: httpapi.TypeMalformed, detail: []string{"request body is empty"}},
		{name: "null body", contentType: "application/json", body: "null", status: 400,
			typ: httpapi.TypeMalformed, detail: []string{"request body is null"}},
		{name: "trailing object", contentType: "application/json", body: valid + ` {"sku":"x"}`, status: 400,
			typ: httpapi.TypeMalformed, detail: []string{"unexpected data after the JSON value at byte offset 46", "exactly one JSON object"}},
		{name: "trailing garbage", contentType: "application/json", body: valid + "x", status: 400,
			typ: httpapi.TypeMalformed, detail: []string{"unexpected data after the JSON value at byte offset 45", `"x"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/stock/SKU-1/receive", strings.NewReader(tt.body))
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			rec := httptest.NewRecorder()
			decodeHandler(httpapi.Decoder{MaxBytes: tt.maxBytes}).ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.status, rec.Body)
			}
			if tt.status == 204 {
				return
			}
			p := readProblem(t, rec)
			t.Logf("%d %s", rec.Code, rec.Body)
			if p.Type != tt.typ || p.Status != tt.status || p.Title == "" || p.Instance != "/stock/SKU-1/receive" {
				t.Errorf("problem = %+v, want type %s status %d, a title and the path as instance", p, tt.typ, tt.status)
			}
			for _, s := range tt.detail {
				if !strings.Contains(p.Detail, s) {
					t.Errorf("detail %q does not contain %q", p.Detail, s)
				}
			}
			var fields []string
			for _, e := range p.Errors {
				fields = append(fields, e.Field)
				if e.Message == "" {
					t.Errorf("field error %q has no message", e.Field)
				}
			}
			if strings.Join(fields, ",") != strings.Join(tt.fields, ",") {
				t.Errorf("error fields = %q, want %q", fields, tt.fields)
			}
		})
	}
}

// readProblem checks the problem+json content type and decodes the body.
func readProblem(t *testing.T, rec *httptest.ResponseRecorder) httpapi.Problem {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != httpapi.ContentTypeProblem {
		t.Fatalf("Content-Type = %q, want %q", ct, httpapi.ContentTypeProblem)
	}
	var p httpapi.Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem body %q: %v", rec.Body, err)
	}
	return p
}

func TestProblemJSON(t *testing.T) {
	p := httpapi.Problem{Type: httpapi.ProblemBase + "insufficient-stock", Title: "Insufficient stock", Status: 409,
		Detail: "only 2 left", Extensions: map[string]any{"available": 2, "status": "ignored"}}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"available":2,"detail":"only 2 left","status":409,"title":"Insufficient stock","type":"https://keel.dev/problems/insufficient-stock"}`
	if string(b) != want {
		t.Errorf("marshal = %s, want %s", b, want)
	}
	b, _ = json.Marshal(httpapi.Problem{Status: 404})
	if !strings.Contains(string(b), `"type":"about:blank"`) {
		t.Errorf("empty type marshals as %s, want about:blank", b)
	}
}

func TestWriteJSON(t *testing.T) {
	rec := httptest.NewRecorder()
	if err := httpapi.WriteJSON(rec, http.StatusCreated, map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 201 || rec.Header().Get("Content-Type") != "application/json" || rec.Body.String() != "{\"n\":1}\n" {
		t.Errorf("got %d %q %q", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	rec = httptest.NewRecorder()
	if err := httpapi.WriteJSON(rec, http.StatusOK, func() {}); err == nil {
		t.Error("WriteJSON of a func: no error")
	}
	if rec.Code != 500 || rec.Header().Get("Content-Type") != httpapi.ContentTypeProblem {
		t.Errorf("unmarshalable value: got %d %q, want a 500 problem", rec.Code, rec.Header().Get("Content-Type"))
	}
}

// FuzzDecode: whatever the body and content type, Decode does not panic,
// answers nil or a 400, 413, 415 or 422 problem, and accepts only exactly
// one JSON object without a null, whose decoded value encodes and decodes
// back to itself.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"sku":"SKU-1","warehouse":"w1","quantity":3}`, `{"sku":"S","warehouse":"w","quantity":1,"lines":[{"qty":1}]}`,
		`{}`, `null`, `{"sku":null}`, `{"quantity":"3"}`, `[1]`, `{"a":1}{"b":2}`, ""} {
		f.Add("application/json", []byte(s))
	}
	f.Add("text/plain", []byte(`{}`))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/x", bytes.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		var cmd receiveStock
		p := httpapi.Decoder{MaxBytes: 4 << 10}.Decode(httptest.NewRecorder(), r, &cmd)
		if p != nil {
			if !slices.Contains([]int{400, 413, 415, 422}, p.Status) || p.Type == "" || p.Detail == "" {
				t.Fatalf("problem %+v for %q", p, body)
			}
			return
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil || hasNull(v) {
			t.Fatalf("accepted %q (%v)", body, err)
		}
		again, err := json.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		// Compared as JSON: an empty list and an absent one (omitempty)
		// are the same request.
		var back receiveStock
		err = json.Unmarshal(again, &back)
		twice, _ := json.Marshal(back)
		if err != nil || !bytes.Equal(twice, again) {
			t.Fatalf("%q decoded to %+v, which does not round-trip (%v)", body, cmd, err)
		}
	})
}

func hasNull(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case map[string]any:
		for _, e := range v {
			if hasNull(e) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if hasNull(e) {
				return true
			}
		}
	}
	return false
}
