package httpapi_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/keel-commerce/keel/services/kit/httpapi"
)

// Every answer of Wrap's routing is a problem that says what to fix:
// unknown routes and methods (ServeMux answers those in plain text) and
// path or query parameters that break the string rule, refused before the
// handler (or an idempotency record) sees them (issue 9, defects 1 and 6).
func TestRouteProblems(t *testing.T) {
	var logs bytes.Buffer
	h, reg := stack(t, &logs)
	tests := []struct {
		name, method, target string
		status               int
		typ, field, allow    string
		detail               string
	}{
		{name: "unknown route", method: "GET", target: "/checkouts", status: 404, typ: httpapi.TypeNotFound,
			detail: "no route matches GET /checkouts"},
		{name: "wrong method", method: "DELETE", target: "/stock/SKU-1/receive", status: 405, typ: httpapi.TypeMethodNotAllowed,
			allow: "POST", detail: "/stock/SKU-1/receive does not take DELETE; it takes POST"},
		{name: "NUL in a path parameter", method: "POST", target: "/stock/a%00b/receive", status: 400, typ: httpapi.TypeMalformed,
			field: "sku", detail: `path parameter "sku" must not contain control characters (U+0000 at character 2)`},
		{name: "malformed identifier", method: "POST", target: "/stock/a%20b/receive", status: 400, typ: httpapi.TypeMalformed,
			field: "sku", detail: `path parameter "sku" must be 1 to 128 letters`},
		{name: "non-ASCII identifier", method: "POST", target: "/stock/%C3%A9/receive", status: 400, typ: httpapi.TypeMalformed,
			field: "sku", detail: `path parameter "sku" must be 1 to 128`},
		{name: "identifier too long", method: "POST", target: "/stock/" + strings.Repeat("a", 129) + "/receive", status: 400,
			typ: httpapi.TypeMalformed, field: "sku", detail: `path parameter "sku" must be 1 to 128`},
		{name: "NUL in a query value", method: "POST", target: "/stock/SKU-1/receive?after=%00", status: 400, typ: httpapi.TypeMalformed,
			field: "after", detail: `query parameter "after" must not contain control characters (U+0000 at character 1)`},
		{name: "invalid UTF-8 in a query value", method: "GET", target: "/healthz?x=%ff", status: 400, typ: httpapi.TypeMalformed,
			field: "x", detail: `query parameter "x" must be valid UTF-8`},
		{name: "control character in a query name", method: "GET", target: "/healthz?a%0Ab=1", status: 400, typ: httpapi.TypeMalformed,
			field: "a\nb", detail: `query parameter "a\nb" name must not contain control characters`},
		{name: "identifier and free-text query pass", method: "POST", target: "/stock/lg-2ZkQm3o-12:x.y_z/receive?q=Gr%C3%BC%C3%9Fe+%F0%9F%98%80", status: 202},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := serve(h, tt.method, tt.target)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.status, rec.Body)
			}
			if tt.status < 400 {
				return
			}
			p := readProblem(t, rec)
			if p.Type != tt.typ || p.Status != tt.status || !strings.Contains(p.Detail, tt.detail) {
				t.Errorf("problem = %+v, want type %s status %d detail containing %q", p, tt.typ, tt.status, tt.detail)
			}
			if tt.field != "" && (len(p.Errors) != 1 || p.Errors[0].Field != tt.field) {
				t.Errorf("errors = %+v, want one naming %q", p.Errors, tt.field)
			}
			if got := rec.Header().Get("Allow"); got != tt.allow {
				t.Errorf("Allow = %q, want %q", got, tt.allow)
			}
			if p.Extensions["request_id"] == nil {
				t.Errorf("problem has no request_id: %s", rec.Body)
			}
		})
	}
	// A refused parameter is counted under its route, not "unmatched".
	if got := requests(t, reg, "/stock/{sku}/receive", "POST", "400"); got != 5 {
		t.Errorf("400s on /stock/{sku}/receive = %v, want 5", got)
	}
}

// A redirect to the clean path is not a 404: it passes through.
func TestRouteRedirectPasses(t *testing.T) {
	var logs bytes.Buffer
	h, _ := stack(t, &logs)
	rec := serve(h, http.MethodPost, "/stock/SKU-1/../SKU-2/receive")
	if rec.Code != http.StatusTemporaryRedirect && rec.Code != http.StatusMovedPermanently {
		t.Fatalf("status = %d, want a redirect; body %s", rec.Code, rec.Body)
	}
	if loc := rec.Header().Get("Location"); loc != "/stock/SKU-2/receive" {
		t.Errorf("Location = %q", loc)
	}
}
