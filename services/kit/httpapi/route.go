package httpapi

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

// TypeMethodNotAllowed (405): the route exists but not for this method;
// the Allow header lists the methods it takes.
const TypeMethodNotAllowed = ProblemBase + "method-not-allowed"

// Route serves mux with the checks every route shares, so no handler can
// forget them:
//
//   - a request no route matches gets a 404 problem, one whose path matches
//     with another method a 405 problem with Allow (ServeMux would answer
//     in plain text);
//   - every path wildcard ({id}, {sku}) must be an identifier (IDPattern),
//     else a 400 problem names the parameter before any handler or
//     idempotency record sees it;
//   - every query parameter, name and value, must be free text (no control
//     characters, valid UTF-8), else a 400 problem names it. Handlers check
//     their parameters' own formats.
func Route(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern == "" { // ServeMux's own 404 or 405
			h.ServeHTTP(&unmatchedWriter{ResponseWriter: w, r: r}, r)
			return
		}
		if p := checkParams(pattern, r); p != nil {
			r.Pattern = pattern // for the metrics' route label
			WriteProblem(w, r, p)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// checkParams applies the identifier rule to the path wildcards of pattern
// and the free-text rule to the query.
func checkParams(pattern string, r *http.Request) *Problem {
	if _, p, ok := strings.Cut(pattern, " "); ok { // "GET /carts/{id}"
		pattern = p
	}
	if i := strings.IndexByte(pattern, '/'); i > 0 { // a host
		pattern = pattern[i:]
	}
	want := strings.Split(pattern, "/")
	got := strings.Split(r.URL.EscapedPath(), "/")
	if len(want) == len(got) { // else ServeMux redirects to the clean path
		for i, seg := range want {
			name, ok := strings.CutPrefix(seg, "{")
			if !ok || name == "$}" {
				continue
			}
			name = strings.TrimSuffix(strings.TrimSuffix(name, "}"), "...")
			v, err := url.PathUnescape(got[i])
			if err != nil {
				return paramProblem("path", name, "is not a valid URL path segment")
			}
			if f := idFault(v); f != "" {
				return paramProblem("path", name, f)
			}
		}
	}
	q := r.URL.Query()
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if f := textFault(k); f != "" {
			return paramProblem("query", k, "name "+f)
		}
		for _, v := range q[k] {
			if f := textFault(v); f != "" {
				return paramProblem("query", k, f)
			}
		}
	}
	return nil
}

// paramProblem is the 400 for one invalid parameter (in is "path" or "query").
func paramProblem(in, name, msg string) *Problem {
	return BadRequest(fmt.Sprintf("%s parameter %q %s", in, name, msg), FieldError{Field: name, Message: msg})
}

// BadParams is the 400 for invalid query or path parameters, listing each.
func BadParams(errs []FieldError) *Problem {
	p := Invalid(errs)
	p.Status, p.Type, p.Title = http.StatusBadRequest, TypeMalformed, "Invalid parameters"
	return p
}

// unmatchedWriter turns ServeMux's plain-text 404 and 405 into problems;
// any other answer (a redirect to the clean path) passes through.
type unmatchedWriter struct {
	http.ResponseWriter
	r       *http.Request
	decided bool
	pass    bool
}

func (u *unmatchedWriter) WriteHeader(code int) {
	if u.decided {
		return
	}
	u.decided = true
	switch code {
	case http.StatusNotFound:
		WriteProblem(u.ResponseWriter, u.r, NotFound(fmt.Sprintf("no route matches %s %s", u.r.Method, u.r.URL.Path)))
	case http.StatusMethodNotAllowed:
		WriteProblem(u.ResponseWriter, u.r, &Problem{Type: TypeMethodNotAllowed, Title: "Method not allowed", Status: code,
			Detail: fmt.Sprintf("%s does not take %s; it takes %s", u.r.URL.Path, u.r.Method, u.Header().Get("Allow"))})
	default:
		u.pass = true
		u.ResponseWriter.WriteHeader(code)
	}
}

func (u *unmatchedWriter) Write(b []byte) (int, error) {
	if !u.decided {
		u.WriteHeader(http.StatusOK)
	}
	if u.pass {
		return u.ResponseWriter.Write(b)
	}
	return len(b), nil // the mux's plain-text body, replaced by the problem
}
