package httpapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/services/kit/httpapi"
)

// stack builds a mux with the ops routes and two API routes behind the
// standard middleware, logging into logs.
func stack(t *testing.T, logs *bytes.Buffer, checks ...httpapi.Check) (http.Handler, *prometheus.Registry) {
	t.Helper()
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	reg := prometheus.NewRegistry()
	m, err := httpapi.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	httpapi.Ops{Logger: logger, Registry: reg, Checks: checks, OpenAPI: []byte(`{"openapi":"3.1.0"}`)}.Register(mux)
	mux.HandleFunc("POST /stock/{sku}/receive", func(w http.ResponseWriter, r *http.Request) {
		_ = httpapi.WriteJSON(w, http.StatusAccepted, map[string]string{"sku": r.PathValue("sku")})
	})
	mux.HandleFunc("POST /boom", func(w http.ResponseWriter, r *http.Request) {
		panic("db password is hunter2")
	})
	return httpapi.Wrap(mux, logger, m), reg
}

func serve(h http.Handler, method, target string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestPanicBecomesProblem(t *testing.T) {
	var logs bytes.Buffer
	h, reg := stack(t, &logs)
	rec := serve(h, http.MethodPost, "/boom", httpapi.HeaderRequestID, "req-42")
	if rec.Code != 500 {
		t.Fatalf("status = %d, want 500", rec.Code)
	}
	p := readProblem(t, rec)
	if p.Type != httpapi.TypeInternal || p.Extensions["request_id"] != "req-42" {
		t.Errorf("problem = %+v, want internal with request_id req-42", p)
	}
	if strings.Contains(rec.Body.String(), "hunter2") || strings.Contains(rec.Body.String(), "goroutine") {
		t.Errorf("500 body leaks the panic: %s", rec.Body)
	}
	if !strings.Contains(logs.String(), "hunter2") || !strings.Contains(logs.String(), `"request_id":"req-42"`) ||
		!strings.Contains(logs.String(), "server_test.go") {
		t.Errorf("log lacks the panic value, request id or stack: %s", logs.String())
	}
	if got := requests(t, reg, "/boom", "POST", "500"); got != 1 {
		t.Errorf("keel_http_requests_total{route=/boom,status=500} = %v, want 1", got)
	}
}

// requests reads one keel_http_requests_total series (0 if absent).
func requests(t *testing.T, reg *prometheus.Registry, route, method, status string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "keel_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == route && labels["method"] == method && labels["status"] == status {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestMetricsUseRoutePattern(t *testing.T) {
	var logs bytes.Buffer
	h, reg := stack(t, &logs)
	for _, sku := range []string{"a", "b", "c"} {
		if rec := serve(h, http.MethodPost, "/stock/"+sku+"/receive"); rec.Code != 202 {
			t.Fatalf("status = %d", rec.Code)
		}
	}
	serve(h, http.MethodGet, "/no/such/thing")
	if got := requests(t, reg, "/stock/{sku}/receive", "POST", "202"); got != 3 {
		t.Errorf("requests for /stock/{sku}/receive = %v, want 3", got)
	}
	if got := requests(t, reg, "unmatched", "GET", "404"); got != 1 {
		t.Errorf("unmatched 404s = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(reg, "keel_http_request_seconds"); n != 2 {
		t.Errorf("histogram series = %d, want 2 (one per route and method)", n)
	}
	rec := serve(h, http.MethodGet, "/metrics")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `keel_http_requests_total{method="POST",route="/stock/{sku}/receive",status="202"} 3`) {
		t.Errorf("/metrics = %d %s", rec.Code, rec.Body)
	}
}

func TestRequestID(t *testing.T) {
	var logs bytes.Buffer
	h, _ := stack(t, &logs)
	if got := serve(h, http.MethodGet, "/healthz", httpapi.HeaderRequestID, "abc-1").Header().Get(httpapi.HeaderRequestID); got != "abc-1" {
		t.Errorf("echoed id = %q, want abc-1", got)
	}
	a := serve(h, http.MethodGet, "/healthz").Header().Get(httpapi.HeaderRequestID)
	b := serve(h, http.MethodGet, "/healthz", httpapi.HeaderRequestID, strings.Repeat("x", 200)).Header().Get(httpapi.HeaderRequestID)
	if len(a) != 32 || len(b) != 32 || a == b {
		t.Errorf("generated ids %q, %q: want two distinct 32-hex ids", a, b)
	}
}

func TestOpsRoutes(t *testing.T) {
	var logs bytes.Buffer
	pgDown := errors.New("dial tcp 127.0.0.1:5432: connection refused")
	ok := func(context.Context) error { return nil }
	h, _ := stack(t, &logs, httpapi.Check{Name: "postgres", Func: func(context.Context) error { return pgDown }}, httpapi.Check{Name: "kafka", Func: ok})

	if rec := serve(h, http.MethodGet, "/healthz"); rec.Code != 200 {
		t.Errorf("/healthz = %d", rec.Code)
	}
	rec := serve(h, http.MethodGet, "/readyz")
	if rec.Code != 503 {
		t.Fatalf("/readyz with a failing check = %d, want 503", rec.Code)
	}
	p := readProblem(t, rec)
	if p.Type != httpapi.TypeNotReady || !strings.Contains(p.Detail, `"postgres"`) || strings.Contains(p.Detail, "kafka") {
		t.Errorf("problem = %+v, want not-ready naming postgres only", p)
	}
	if strings.Contains(rec.Body.String(), "refused") || !strings.Contains(logs.String(), "refused") {
		t.Errorf("the check's error belongs in the log, not the response: body %s", rec.Body)
	}

	h, _ = stack(t, &logs, httpapi.Check{Name: "kafka", Func: ok})
	if rec := serve(h, http.MethodGet, "/readyz"); rec.Code != 200 {
		t.Errorf("/readyz with passing checks = %d %s", rec.Code, rec.Body)
	}
	rec = serve(h, http.MethodGet, "/openapi.json")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" || rec.Body.String() != `{"openapi":"3.1.0"}` {
		t.Errorf("/openapi.json = %d %q %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
}

func TestServerDrainsOnShutdown(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		_ = httpapi.WriteJSON(w, http.StatusOK, "done")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &httpapi.Server{ShutdownTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, h) }()

	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{string(b), err}
	}()
	<-started
	cancel() // shutdown begins while the request is in progress
	time.Sleep(100 * time.Millisecond)
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("the server still accepts connections after its context ended")
	}
	close(release)
	r := <-got
	if r.err != nil || r.body != "\"done\"\n" {
		t.Errorf("in-flight request: %q, %v; want it to finish during the drain", r.body, r.err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v, want nil after a clean drain", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after shutdown")
	}
}

func TestRunReportsListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = httpapi.NewServer(nil).Run(context.Background(), ln.Addr().String(), http.NotFoundHandler())
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("Run on a taken port = %v, want a listen error", err)
	}
}

func TestUnexpected(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
	}{
		{errors.New("bug"), http.StatusInternalServerError},
		{fmt.Errorf("append: %w", &pgconn.PgError{Severity: "FATAL", Code: "57P01"}), http.StatusServiceUnavailable},
		{fmt.Errorf("acquire: %w", context.DeadlineExceeded), http.StatusServiceUnavailable},
		{fmt.Errorf("x: %w", command.ErrClosed), http.StatusServiceUnavailable},
		{&pgconn.PgError{Code: "23505"}, http.StatusInternalServerError},
	} {
		rec := httptest.NewRecorder()
		httpapi.WriteProblem(rec, httptest.NewRequest(http.MethodPost, "/x", nil), httpapi.Unexpected(tc.err))
		ra := rec.Header().Get("Retry-After")
		if rec.Code != tc.status || (tc.status == 503) != (ra != "") {
			t.Errorf("Unexpected(%v): %d Retry-After=%q, want %d with Retry-After on 503 only", tc.err, rec.Code, ra, tc.status)
		}
	}
}
