// Package httpapi is the HTTP edge every Keel service shares: RFC 9457
// problem details for every error, strict JSON decoding with validation,
// the standard middleware (request id, metrics, panic recovery), the ops
// routes (/healthz, /readyz, /metrics, /openapi.json) and a server that
// drains gracefully. It uses only net/http, so handlers are plain
// http.Handlers on a Go 1.22+ ServeMux:
//
//	mux := http.NewServeMux()
//	mux.Handle("POST /stock/{sku}/receive", keys.Wrap(http.HandlerFunc(receive)))
//	httpapi.Ops{Registry: reg, Checks: []httpapi.Check{{Name: "postgres", Func: pool.Ping}}}.Register(mux)
//	return httpapi.NewServer(logger).Run(ctx, ":8080", httpapi.Wrap(mux, logger, metrics))
//
// Wrap's routing refuses a path parameter that is not an identifier and a
// query parameter with a control character (400, naming it), and Decode
// every body string with one (422): see TextPattern for the string rule.
//
// Errors are mapped to HTTP here, at the edge, and nowhere else: a 4xx says
// precisely what to fix; a 5xx says nothing of the cause and carries the
// request id that finds it in the log. Unexpected decides which: a
// dependency that is down is a 503 with Retry-After, never a 500.
//
// Problem types are ProblemBase + a slug; the shared ones are:
//
//	malformed-request          400  body is not the JSON the endpoint takes
//	idempotency-key-invalid    400  Idempotency-Key empty, too long or not ASCII
//	idempotency-key-required   400  the endpoint needs an Idempotency-Key
//	not-found                  404  also for a path no route matches
//	method-not-allowed         405  the route takes other methods (Allow lists them)
//	conflict                   409  conflicts with current state
//	idempotency-key-in-flight  409  the first request with this key is still running
//	payload-too-large          413
//	unsupported-media-type     415
//	validation                 422  well-formed but invalid values, all listed in "errors"
//	idempotency-key-reused     422  the key was used for a different request
//	command-id-reused          422  the command id was used for a different command
//	internal                   500
//	not-ready                  503  a readiness check failed
//	unavailable                503  a dependency is down: retry after Retry-After (see Unexpected)
package httpapi
