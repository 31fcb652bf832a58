package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server runs a handler with timeouts that keep slow or idle clients from
// holding connections, and shuts down gracefully when its context ends.
// The zero value uses the defaults documented on each field; a Server may
// run several listeners at once.
type Server struct {
	// Logger receives server errors and start/stop lines; nil discards them.
	Logger *slog.Logger
	// ReadHeaderTimeout bounds reading the request headers (default 5s),
	// the defence against slowloris clients.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading the whole request (default 30s).
	ReadTimeout time.Duration
	// WriteTimeout bounds handling and writing the response (default 60s).
	WriteTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections (default 120s).
	IdleTimeout time.Duration
	// ShutdownTimeout bounds the graceful drain once the context ends
	// (default 15s); connections still open after it are closed.
	ShutdownTimeout time.Duration
}

// NewServer returns a Server with the default timeouts and logger.
func NewServer(logger *slog.Logger) *Server {
	return &Server{Logger: logger}
}

// Run listens on addr and serves h until ctx ends; see Serve.
func (s *Server) Run(ctx context.Context, addr string, h http.Handler) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("http listen %s: %w", addr, err)
	}
	return s.Serve(ctx, ln, h)
}

// Serve serves h on ln until ctx ends, then stops accepting, lets requests
// in progress finish within ShutdownTimeout, and returns nil. Requests see
// ctx's values but not its cancellation, so the drain is not cut short. It
// returns an error if serving fails or the drain times out.
func (s *Server) Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	logger := s.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	base := context.WithoutCancel(ctx)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: orDefault(s.ReadHeaderTimeout, 5*time.Second),
		ReadTimeout:       orDefault(s.ReadTimeout, 30*time.Second),
		WriteTimeout:      orDefault(s.WriteTimeout, 60*time.Second),
		IdleTimeout:       orDefault(s.IdleTimeout, 120*time.Second),
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.InfoContext(ctx, "http serving", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("http serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	timeout := orDefault(s.ShutdownTimeout, 15*time.Second)
	sctx, cancel := context.WithTimeout(base, timeout)
	defer cancel()
	logger.InfoContext(sctx, "http shutting down", "addr", ln.Addr().String(), "timeout", timeout)
	if err := srv.Shutdown(sctx); err != nil {
		cerr := srv.Close()
		return errors.Join(fmt.Errorf("http shutdown %s: %w", ln.Addr(), err), cerr)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http serve %s: %w", ln.Addr(), err)
	}
	return nil
}

var errNoCheck = errors.New("no check function")

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Check is one readiness check: Func returns nil when the dependency Name
// (e.g. "postgres" with pool.Ping) is usable.
type Check struct {
	Name string
	Func func(context.Context) error
}

// Ops are the routes every Keel process serves beside its API. The zero
// value serves only /healthz and /readyz (always ready).
type Ops struct {
	// Logger receives failed readiness checks with their errors (the
	// response names only the check); nil discards them.
	Logger *slog.Logger
	// Checks run, concurrently, on every GET /readyz.
	Checks []Check
	// CheckTimeout bounds each check (default 2s).
	CheckTimeout time.Duration
	// Registry is served on GET /metrics; nil leaves the route out.
	Registry *prometheus.Registry
	// OpenAPI is served verbatim on GET /openapi.json; nil leaves the
	// route out.
	OpenAPI []byte
}

// Register mounts the ops routes on mux:
//
//	GET /healthz       liveness: 200 while the process can answer at all
//	GET /readyz        readiness: 200, or a 503 problem naming the failed checks
//	GET /metrics       Prometheus exposition of Registry
//	GET /openapi.json  the API description, application/json
func (o Ops) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_ = WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", o.ready)
	if o.Registry != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{Registry: o.Registry}))
	}
	if o.OpenAPI != nil {
		doc := o.OpenAPI
		mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(doc)
		})
	}
}

func (o Ops) ready(w http.ResponseWriter, r *http.Request) {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	timeout := orDefault(o.CheckTimeout, 2*time.Second)
	errs := make([]error, len(o.Checks))
	var wg sync.WaitGroup
	for i, c := range o.Checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), timeout)
			defer cancel()
			if c.Func == nil {
				errs[i] = errNoCheck
				return
			}
			errs[i] = c.Func(ctx)
		})
	}
	wg.Wait()
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, o.Checks[i].Name)
			logger.WarnContext(r.Context(), "readiness check failed", "check", o.Checks[i].Name, "err", err)
		}
	}
	if len(failed) > 0 {
		detail := fmt.Sprintf("readiness check %q failed", failed[0])
		if len(failed) > 1 {
			detail = fmt.Sprintf("readiness checks %q failed", failed)
		}
		WriteProblem(w, r, &Problem{Type: TypeNotReady, Title: "Not ready", Status: http.StatusServiceUnavailable,
			Detail: detail, Extensions: map[string]any{"failed_checks": failed}})
		return
	}
	_ = WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
