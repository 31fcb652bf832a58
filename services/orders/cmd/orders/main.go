// Command orders serves the orders HTTP API: orders placed from checkouts,
// confirmed, paid, shipped or cancelled. Configuration (environment):
//
//	KEEL_DATABASE_URL  the orders database; default KEEL_PG_URL with database keel_orders
//	KEEL_PG_URL        PostgreSQL server (default postgres://keel:keel@127.0.0.1:5432/postgres)
//	KEEL_HTTP_ADDR     API, /healthz, /readyz, /metrics, /openapi.json (default 127.0.0.1:8083)
//
// SIGINT or SIGTERM drains HTTP, waits for accepted commands, then exits.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/idempotency"
	api "github.com/keel-commerce/keel/services/orders/adapters/http"
	"github.com/keel-commerce/keel/services/orders/app"
)

// Config is the binary's configuration, read from the environment once.
type Config struct {
	DatabaseURL string
	HTTPAddr    string
	// MaxConns sizes the database pool.
	MaxConns int32
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// dbURL is KEEL_DATABASE_URL, or KEEL_PG_URL's server with database name.
func dbURL(name string) (string, error) {
	if u := os.Getenv("KEEL_DATABASE_URL"); u != "" {
		return u, nil
	}
	u, err := url.Parse(env("KEEL_PG_URL", "postgres://keel:keel@127.0.0.1:5432/postgres"))
	if err != nil {
		return "", fmt.Errorf("KEEL_PG_URL: %w", err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

func load() (Config, error) {
	db, err := dbURL("keel_orders")
	if err != nil {
		return Config{}, err
	}
	c := Config{DatabaseURL: db, HTTPAddr: env("KEEL_HTTP_ADDR", "127.0.0.1:8083"), MaxConns: 32}
	if c.HTTPAddr == "" {
		return Config{}, errors.New("KEEL_HTTP_ADDR is empty")
	}
	return c, nil
}

// LogValue masks the database password.
func (c Config) LogValue() slog.Value {
	db := c.DatabaseURL
	if u, err := url.Parse(db); err == nil {
		db = u.Redacted()
	} else {
		db = "(unparsable)"
	}
	return slog.GroupValue(slog.String("database_url", db), slog.String("http_addr", c.HTTPAddr), slog.Int("max_conns", int(c.MaxConns)))
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log); err != nil {
		log.Error("orders failed", "err", err)
		os.Exit(1)
	}
	log.Info("orders stopped")
}

func run(ctx context.Context, log *slog.Logger) error {
	cfg, err := load()
	if err != nil {
		return err
	}
	log.Info("orders starting", "config", cfg)
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("database url: %w", err)
	}
	pcfg.MaxConns = cfg.MaxConns
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer pool.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	st, err := pg.New(ctx, pool, pg.Options{Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	defer st.Close()
	svc, err := app.New(ctx, st, app.Config{Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	// Close after the HTTP server drained (defers run in reverse).
	defer svc.Close()
	if err := idempotency.Migrate(ctx, pool); err != nil {
		return err
	}
	keys, err := idempotency.New(pool, idempotency.Config{Logger: log})
	if err != nil {
		return err
	}
	metrics, err := httpapi.NewMetrics(reg)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	api.New(svc, keys, log).Register(mux)
	httpapi.Ops{Logger: log, Registry: reg, OpenAPI: api.OpenAPI,
		Checks: []httpapi.Check{{Name: "postgres", Func: pool.Ping}}}.Register(mux)
	return httpapi.NewServer(log).Run(ctx, cfg.HTTPAddr, httpapi.Wrap(mux, log, metrics))
}
