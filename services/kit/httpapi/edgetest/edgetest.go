// Package edgetest checks a service's HTTP edge against the string rule
// (see httpapi.TextPattern): requests that break it must get a precise
// problem naming the offending field or parameter, never a 5xx, and the
// longest and most varied values the rule admits must be accepted.
package edgetest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/keel-commerce/keel/services/kit/httpapi"
)

// Do sends one request (body "" for none; JSON otherwise) and returns the
// status, the Content-Type and the body of the answer.
type Do func(t *testing.T, method, path, body string) (status int, contentType string, b []byte)

// Client adapts the usual test helper, do(t, method, path, contentType,
// body, headers...), to Do; a body is sent as application/json.
func Client(do func(t *testing.T, method, path, ctype, body string, hdr ...string) (*http.Response, []byte)) Do {
	return func(t *testing.T, method, path, body string) (int, string, []byte) {
		ctype := ""
		if body != "" {
			ctype = "application/json"
		}
		res, b := do(t, method, path, ctype, body)
		return res.StatusCode, res.Header.Get("Content-Type"), b
	}
}

// Case is one request and the answer it must get: Status, and for a
// problem the Field its errors must name ("" for none).
type Case struct {
	Name, Method, Path, Body string
	Status                   int
	Field                    string
}

// Run sends every case with do and checks its answer.
func Run(t *testing.T, do Do, cases []Case) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			status, ct, b := do(t, c.Method, c.Path, c.Body)
			if status != c.Status {
				t.Fatalf("%s %s: status %d, want %d; body %s", c.Method, c.Path, status, c.Status, b)
			}
			if status < 400 {
				return
			}
			if ct != httpapi.ContentTypeProblem {
				t.Fatalf("Content-Type %q, want %q; body %s", ct, httpapi.ContentTypeProblem, b)
			}
			var p httpapi.Problem
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatalf("problem %s: %v", b, err)
			}
			named := c.Field == ""
			for _, e := range p.Errors {
				named = named || e.Field == c.Field
			}
			if !named {
				t.Errorf("problem %s does not name %q", b, c.Field)
			}
		})
	}
}

// Long is a string of n characters of mixed scripts and emoji (each up to
// four bytes in UTF-8), the longest a field of max n characters admits.
func Long(n int) string {
	const mix = "aÄ東😀"
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteRune([]rune(mix)[i%4])
	}
	return b.String()
}

// ID is an identifier of n characters (n at most httpapi.MaxIDLength).
func ID(n int) string {
	return "I" + strings.Repeat("d", n-1)
}
