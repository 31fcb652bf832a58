// Package openapitest holds every HTTP test to the service's OpenAPI
// document, so the document cannot drift from the code: a handler wrapped
// by Checker.Handler has each request and its response validated by
// kin-openapi's openapi3filter, and the test fails on
//
//   - a response whose status, headers or body the document does not
//     allow (an undocumented status included);
//   - a request the document forbids that the server accepted (2xx);
//   - a request the document allows that the server refused as malformed
//     (400 or 415): the document is looser than the server;
//   - a route the document does not have that the server answered other
//     than with a 404 or 405 problem.
//
// A 422 for a request the document allows is not a failure: some rules
// (unique SKUs in a reservation) are beyond what a schema says, and the
// document states them in words; Checker.Beyond names the parameters with
// such rules that the server refuses with a 400.
package openapitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// Checker validates traffic against one OpenAPI document. It is safe for
// concurrent use (handlers under test may serve requests in parallel).
type Checker struct {
	t      testing.TB
	router routers.Router
	beyond []string
}

// Beyond names the parameters (query or header) whose values the server
// checks beyond what their schema can say: an opaque token or cursor the
// server issued, a bound across two parameters (to after from). A 400 for
// a request carrying one of them is not reported as the document being
// looser than the server; the document says the rule in words.
func (c *Checker) Beyond(params ...string) *Checker {
	c.beyond = append(c.beyond, params...)
	return c
}

// carriesBeyond reports whether r has one of the Beyond parameters.
func (c *Checker) carriesBeyond(r *http.Request) bool {
	q := r.URL.Query()
	for _, p := range c.beyond {
		if q.Has(p) || r.Header.Get(p) != "" {
			return true
		}
	}
	return false
}

// New loads and validates the document (a test fails at once if the
// document itself is invalid) and returns its Checker. The document's
// servers are ignored for routing: tests serve on any host and port.
func New(t testing.TB, spec []byte) *Checker {
	t.Helper()
	doc, err := Load(spec)
	if err != nil {
		t.Fatalf("openapi document: %v", err)
	}
	if err := keyedAnswers(doc); err != nil {
		t.Fatalf("openapi document: %v", err)
	}
	doc.Servers = nil
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("openapi router: %v", err)
	}
	return &Checker{t: t, router: router}
}

// Load parses the document and checks it is a valid OpenAPI document
// (schemas, references, examples and defaults included).
func Load(spec []byte) (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(spec)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if err := doc.Validate(context.Background(), openapi3.EnableExamplesValidation()); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	return doc, nil
}

// keyedAnswers checks that every operation taking an Idempotency-Key
// documents the answers the key itself can give, whatever the handler:
// 400 (invalid key), 409 (in flight), 413 (body over the limit, read to
// hash it) and 422 (key reused for another request).
func keyedAnswers(doc *openapi3.T) error {
	var errs []error
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			keyed := false
			for _, p := range append(slices.Clone(item.Parameters), op.Parameters...) {
				if p.Value != nil && p.Value.In == openapi3.ParameterInHeader && strings.EqualFold(p.Value.Name, "Idempotency-Key") {
					keyed = true
				}
			}
			if !keyed {
				continue
			}
			for _, code := range []int{http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity} {
				if op.Responses.Status(code) == nil {
					errs = append(errs, fmt.Errorf("%s %s takes an Idempotency-Key but does not document %d", method, path, code))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Handler returns h wrapped so that every request it serves, and the
// response, is checked against the document; a mismatch is reported with
// t.Errorf (the response still reaches the client unchanged).
func (c *Checker) Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		if r.Body != nil {
			var err error
			if body, err = io.ReadAll(r.Body); err != nil {
				c.t.Errorf("openapitest: read the request body of %s %s: %v", r.Method, r.URL, err)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())

		if err := c.check(r, body, rec.Code, rec.Header(), rec.Body.Bytes()); err != nil {
			c.t.Errorf("openapitest: %s %s → %d: %v\nrequest body: %s\nresponse body: %s",
				r.Method, r.URL.RequestURI(), rec.Code, err, snippet(body), snippet(rec.Body.Bytes()))
		}
	})
}

// check validates one exchange; nil means the document and the server agree.
func (c *Checker) check(r *http.Request, body []byte, status int, header http.Header, respBody []byte) error {
	// A fresh copy for the validator, which reads the body again.
	req := r.Clone(r.Context())
	req.Body = io.NopCloser(bytes.NewReader(body))
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		if errors.Is(err, routers.ErrPathNotFound) || errors.Is(err, routers.ErrMethodNotAllowed) {
			if (status == http.StatusNotFound || status == http.StatusMethodNotAllowed) &&
				strings.HasPrefix(header.Get("Content-Type"), "application/problem+json") {
				return nil
			}
			return fmt.Errorf("the document has no such operation (%v), yet the server answered %d %s", err, status, header.Get("Content-Type"))
		}
		return fmt.Errorf("find the route: %w", err)
	}
	opts := &openapi3filter.Options{
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		IncludeResponseStatus: true,
		MultiError:            true,
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	reqErr := openapi3filter.ValidateRequest(r.Context(), in)
	// kin-openapi reads the first JSON value and ignores what follows it;
	// a body that is not exactly one JSON value is no JSON the document allows.
	if reqErr == nil && len(bytes.TrimSpace(body)) > 0 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") && !json.Valid(body) {
		reqErr = errors.New("the request body is not exactly one JSON value")
	}

	var errs []error
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header, Options: opts}
	out.SetBodyBytes(respBody)
	if err := openapi3filter.ValidateResponse(r.Context(), out); err != nil {
		errs = append(errs, fmt.Errorf("the response does not match the document: %w", err))
	}
	switch {
	case reqErr != nil && status < 300:
		errs = append(errs, fmt.Errorf("the document forbids this request (%w), yet the server accepted it", reqErr))
	case reqErr == nil && status == http.StatusBadRequest && c.carriesBeyond(r):
	case reqErr == nil && (status == http.StatusBadRequest || status == http.StatusUnsupportedMediaType):
		errs = append(errs, errors.New("the document allows this request, yet the server refused it as malformed: tighten the document"))
	}
	return errors.Join(errs...)
}

func snippet(b []byte) string {
	const max = 600
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}
