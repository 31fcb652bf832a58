package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HeaderRequestID carries the request id in and out.
const HeaderRequestID = "X-Request-Id"

type requestIDKey struct{}

// RequestIDFrom returns the id RequestID gave the request, or "".
func RequestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// RequestID gives every request an id: the caller's X-Request-Id if it is
// 1..128 printable ASCII characters (so a trace crosses services), else a
// fresh random one. The id is echoed in the response header, stored in the
// context (RequestIDFrom) and added to problems and panic logs.
func RequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(HeaderRequestID)
		if !printable(id, 128) {
			id = newRequestID()
		}
		w.Header().Set(HeaderRequestID, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// printable reports whether s is 1..max bytes of visible ASCII or spaces.
func printable(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Recover turns a panic in next into a 500 problem that says nothing of the
// cause, and logs the panic value and stack with the request id at error
// level. If the handler already sent its headers the response cannot be
// changed; the connection is then aborted so the client sees a failure, not
// a truncated success. http.ErrAbortHandler passes through untouched.
func Recover(logger *slog.Logger) func(http.Handler) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rw := wrapWriter(w)
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler {
					panic(v)
				}
				logger.ErrorContext(r.Context(), "http handler panicked",
					"request_id", RequestIDFrom(r.Context()), "method", r.Method, "path", r.URL.Path,
					"route", r.Pattern, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if rw.wrote {
					panic(http.ErrAbortHandler)
				}
				WriteProblem(rw, r, Internal())
			}()
			next.ServeHTTP(rw, r)
		})
	}
}

// Metrics records keel_http_requests_total{route,method,status} and
// keel_http_request_seconds{route,method}. The route is the ServeMux
// pattern that matched without its method ("/stock/{sku}/receive"), or
// "unmatched", so label cardinality stays bounded whatever the clients
// send. It is safe for concurrent use.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers the HTTP metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keel_http_requests_total",
			Help: "HTTP requests handled, by route pattern, method and status code.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keel_http_request_seconds",
			Help:    "Time to handle an HTTP request, by route pattern and method.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "method"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register http metrics: %w", err)
		}
	}
	return m, nil
}

// Wrap measures next. It must sit outside the ServeMux (the mux sets
// r.Pattern on the request it routes) and outside Recover (so a panic
// counts as the 500 it becomes).
func (m *Metrics) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := wrapWriter(w)
		defer func() {
			route := routeLabel(r.Pattern)
			method := methodLabel(r.Method)
			status := rw.status
			if status == 0 {
				status = http.StatusOK
			}
			m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
			m.duration.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(rw, r)
	})
}

func routeLabel(pattern string) string {
	if pattern == "" {
		return "unmatched"
	}
	// "POST /stock/{sku}" → "/stock/{sku}"; the method is its own label.
	if i := strings.IndexAny(pattern, " \t"); i >= 0 {
		return strings.TrimSpace(pattern[i:])
	}
	return pattern
}

func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

// Wrap serves mux with Keel's standard middleware, outermost first:
// RequestID, m's metrics (skipped if m is nil), Recover, then Route's
// checks shared by every route.
func Wrap(mux *http.ServeMux, logger *slog.Logger, m *Metrics) http.Handler {
	h := Recover(logger)(Route(mux))
	if m != nil {
		h = m.Wrap(h)
	}
	return RequestID(h)
}

// WriteJSON writes v as application/json with status. v is marshalled
// before anything is sent, so a value that does not marshal yields a clean
// 500 problem instead of a half-written body; the error is returned for
// the caller to log.
func WriteJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		WriteProblem(w, nil, Internal())
		return fmt.Errorf("write json: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}

// statusWriter remembers the status and whether anything was sent.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func wrapWriter(w http.ResponseWriter) *statusWriter {
	if sw, ok := w.(*statusWriter); ok {
		return sw
	}
	return &statusWriter{ResponseWriter: w}
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.status = code
		w.wrote = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status = http.StatusOK
		w.wrote = true
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (Flush,
// deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
