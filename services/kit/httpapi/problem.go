package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/outage"
)

// ProblemBase prefixes every problem type URI Keel defines. A type is
// ProblemBase + a lower-case, hyphenated slug naming the kind of failure
// ("validation", "insufficient-stock"); clients branch on the type, never on
// the title or detail, so a slug, once shipped, never changes meaning.
// Services add their own domain slugs under the same base.
const ProblemBase = "https://keel.dev/problems/"

// Problem types shared by every Keel service.
const (
	// TypeMalformed (400): the body is not the JSON the endpoint takes:
	// empty, syntax error, unknown field, wrong type, trailing data.
	TypeMalformed = ProblemBase + "malformed-request"
	// TypeValidation (422): the JSON is well-formed but some values are
	// invalid; Errors lists every offending field.
	TypeValidation = ProblemBase + "validation"
	// TypeUnsupportedMediaType (415): the Content-Type is not application/json.
	TypeUnsupportedMediaType = ProblemBase + "unsupported-media-type"
	// TypeTooLarge (413): the body exceeds the endpoint's size limit.
	TypeTooLarge = ProblemBase + "payload-too-large"
	// TypeNotFound (404): the addressed resource does not exist.
	TypeNotFound = ProblemBase + "not-found"
	// TypeConflict (409): the request conflicts with the resource's current
	// state (for example a concurrent change); retrying on fresh state may work.
	TypeConflict = ProblemBase + "conflict"
	// TypeNotReady (503): a readiness check failed; the instance should not
	// receive traffic yet.
	TypeNotReady = ProblemBase + "not-ready"
	// TypeUnavailable (503): a dependency of the service (its database,
	// the broker) is down, or the service is shutting down, or the request
	// ran out of time waiting for one; Retry-After says when to try again.
	// The command was not applied, or a retry with the same
	// Idempotency-Key applies it once.
	TypeUnavailable = ProblemBase + "unavailable"
	// TypeInternal (500): an unexpected failure; the detail never carries
	// internals, only the request id to quote when reporting it.
	TypeInternal = ProblemBase + "internal"
	// TypeIdempotencyKeyInvalid (400): the Idempotency-Key header is empty,
	// too long or not printable ASCII.
	TypeIdempotencyKeyInvalid = ProblemBase + "idempotency-key-invalid"
	// TypeIdempotencyKeyRequired (400): the endpoint requires an
	// Idempotency-Key header and the request has none.
	TypeIdempotencyKeyRequired = ProblemBase + "idempotency-key-required"
	// TypeIdempotencyKeyReused (422): the key was first used with a
	// different request (method, path, query or body).
	TypeIdempotencyKeyReused = ProblemBase + "idempotency-key-reused"
	// TypeCommandIDReused (422): the command id (the body's command_id, or
	// the one an Idempotency-Key gives) was first used for a different
	// command (other type, target or input); first_command names it.
	TypeCommandIDReused = ProblemBase + "command-id-reused"
	// TypeIdempotencyKeyInFlight (409): the first request with this key is
	// still being processed; retry after the Retry-After delay.
	TypeIdempotencyKeyInFlight = ProblemBase + "idempotency-key-in-flight"
)

// ContentTypeProblem is the media type of every error response (RFC 9457).
const ContentTypeProblem = "application/problem+json"

// FieldError names one invalid part of a request: Field is a dotted JSON
// path ("lines.0.quantity"; empty for the body as a whole), Message says
// what is wrong in words a client developer can act on.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// FieldErrors collects field errors while validating; the zero value is an
// empty list ready to use.
type FieldErrors []FieldError

// Add appends an error for field, its message formatted like fmt.Sprintf.
func (e *FieldErrors) Add(field, format string, args ...any) {
	*e = append(*e, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// Problem is an RFC 9457 problem details object. Type is a URI naming the
// kind of problem (see ProblemBase; empty means "about:blank"), Title its
// fixed human summary, Status the HTTP status, Detail what went wrong with
// this request, Instance the request it concerns. Errors lists field-level
// failures. Extensions are added as top-level members; names that clash
// with the standard members are ignored. RetryAfter, when positive, is
// sent as the Retry-After header (whole seconds, rounded up), not in the
// body.
type Problem struct {
	Type       string
	Title      string
	Status     int
	Detail     string
	Instance   string
	Errors     []FieldError
	Extensions map[string]any
	RetryAfter time.Duration
}

// MarshalJSON writes the standard members, then the extensions, as one
// flat object, as RFC 9457 asks.
func (p Problem) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, 6+len(p.Extensions))
	for k, v := range p.Extensions {
		m[k] = v
	}
	typ := p.Type
	if typ == "" {
		typ = "about:blank"
	}
	m["type"] = typ
	m["title"] = p.Title
	m["status"] = p.Status
	delete(m, "detail")
	delete(m, "instance")
	delete(m, "errors")
	if p.Detail != "" {
		m["detail"] = p.Detail
	}
	if p.Instance != "" {
		m["instance"] = p.Instance
	}
	if len(p.Errors) > 0 {
		m["errors"] = p.Errors
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads a problem written by MarshalJSON, extensions
// included; clients and tests use it.
func (p *Problem) UnmarshalJSON(b []byte) error {
	var std struct {
		Type     string       `json:"type"`
		Title    string       `json:"title"`
		Status   int          `json:"status"`
		Detail   string       `json:"detail"`
		Instance string       `json:"instance"`
		Errors   []FieldError `json:"errors"`
	}
	if err := json.Unmarshal(b, &std); err != nil {
		return err
	}
	var all map[string]any
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	for _, k := range []string{"type", "title", "status", "detail", "instance", "errors"} {
		delete(all, k)
	}
	*p = Problem{Type: std.Type, Title: std.Title, Status: std.Status, Detail: std.Detail, Instance: std.Instance, Errors: std.Errors}
	if len(all) > 0 {
		p.Extensions = all
	}
	return nil
}

// WriteProblem writes p as application/problem+json with p.Status (500 if
// unset). It fills what p leaves empty: Title from the status text,
// Instance from the request path, and a "request_id" extension when the
// request went through RequestID, so a client can quote it. Headers set on
// w before the call (Retry-After, Allow) are kept.
func WriteProblem(w http.ResponseWriter, r *http.Request, p *Problem) {
	q := *p
	if q.Status == 0 {
		q.Status = http.StatusInternalServerError
	}
	if q.Title == "" {
		q.Title = http.StatusText(q.Status)
	}
	if r != nil {
		if q.Instance == "" && r.URL != nil {
			q.Instance = r.URL.Path
		}
		if id := RequestIDFrom(r.Context()); id != "" {
			if _, ok := q.Extensions["request_id"]; !ok {
				ext := make(map[string]any, len(q.Extensions)+1)
				for k, v := range q.Extensions {
					ext[k] = v
				}
				ext["request_id"] = id
				q.Extensions = ext
			}
		}
	}
	b, err := json.Marshal(q)
	if err != nil {
		// An extension that does not marshal is a programming error; the
		// client still gets a well-formed problem without the extensions.
		q.Extensions = nil
		b, _ = json.Marshal(q)
	}
	h := w.Header()
	h.Set("Content-Type", ContentTypeProblem)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	if q.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((q.RetryAfter+time.Second-1)/time.Second)))
	}
	w.WriteHeader(q.Status)
	_, _ = w.Write(append(b, '\n'))
}

// BadRequest is a 400 malformed-request problem with detail.
func BadRequest(detail string, errs ...FieldError) *Problem {
	return &Problem{Type: TypeMalformed, Title: "Malformed request", Status: http.StatusBadRequest, Detail: detail, Errors: errs}
}

// Invalid is a 422 validation problem listing every field error; its detail
// names the fields so a log line alone is enough to see what was wrong.
func Invalid(errs []FieldError) *Problem {
	names := make([]string, 0, len(errs))
	seen := make(map[string]bool, len(errs))
	for _, e := range errs {
		n := e.Field
		if n == "" {
			n = "(body)"
		}
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	detail := "the request is invalid"
	switch {
	case len(errs) == 1:
		detail = fmt.Sprintf("invalid %s: %s", names[0], errs[0].Message)
	case len(names) == 1:
		detail = fmt.Sprintf("%d problems with %s", len(errs), names[0])
	case len(names) > 1:
		detail = fmt.Sprintf("%d invalid fields: %s", len(names), strings.Join(names, ", "))
	}
	return &Problem{Type: TypeValidation, Title: "Invalid request", Status: http.StatusUnprocessableEntity, Detail: detail, Errors: errs}
}

// NotFound is a 404 problem with detail.
func NotFound(detail string) *Problem {
	return &Problem{Type: TypeNotFound, Title: "Not found", Status: http.StatusNotFound, Detail: detail}
}

// Conflict is a 409 problem with detail.
func Conflict(detail string) *Problem {
	return &Problem{Type: TypeConflict, Title: "Conflict", Status: http.StatusConflict, Detail: detail}
}

// UnavailableRetryAfter is the Retry-After of an unavailable problem: a
// PostgreSQL restart or a broker election takes a few seconds.
const UnavailableRetryAfter = 2 * time.Second

// Unexpected is the problem for an error a handler did not expect, decided
// here for every service: a dependency that is down (outage.Is), a request
// that ran out of time or was cancelled, a command layer shutting down is a
// 503 unavailable problem with Retry-After, since the same request can
// succeed later; anything else is Internal. Log err before calling it: the
// problem says nothing of the cause.
func Unexpected(err error) *Problem {
	if outage.Is(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, command.ErrClosed) {
		return &Problem{Type: TypeUnavailable, Title: "Service unavailable", Status: http.StatusServiceUnavailable,
			Detail:     "a dependency of the service is unavailable or the service is shutting down; retry after Retry-After with the same Idempotency-Key",
			RetryAfter: UnavailableRetryAfter}
	}
	return Internal()
}

// Internal is the 500 problem: it says nothing about the cause, on purpose;
// the cause belongs in the log, keyed by the request id WriteProblem adds.
func Internal() *Problem {
	return &Problem{Type: TypeInternal, Title: "Internal error", Status: http.StatusInternalServerError,
		Detail: "the server failed to handle the request; quote the request_id when reporting it"}
}
