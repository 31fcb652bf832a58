// Command keel-relay publishes one context's event store to its Kafka topic
// (<context>.events). Run one per service database; see package relay for
// the delivery guarantees.
//
// Configuration, all from the environment:
//
//	KEEL_CONTEXT            bounded context, e.g. stock (required)
//	KEEL_DATABASE_URL       the context's event store; default KEEL_PG_URL with database keel_<context>
//	KEEL_PG_URL             PostgreSQL server (default postgres://keel:keel@127.0.0.1:5432/postgres)
//	KEEL_KAFKA_BROKERS      comma-separated bootstrap brokers (default 127.0.0.1:9092)
//	KEEL_TOPIC              topic to publish to (default <context>.events)
//	KEEL_TOPIC_PARTITIONS   partitions when the relay creates the topic (default 6)
//	KEEL_TOPIC_REPLICATION  replication factor when it creates it (default 1)
//	KEEL_METRICS_ADDR       address of /metrics and /healthz (default 127.0.0.1:9464; empty: off)
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keel-commerce/keel/events/relay"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/topics"
)

type config struct {
	Context     string
	DatabaseURL string
	Brokers     []string
	Topic       string
	Partitions  int32
	Replication int16
	MetricsAddr string
}

func loadConfig() (config, error) {
	c := config{
		Context:     os.Getenv("KEEL_CONTEXT"),
		DatabaseURL: os.Getenv("KEEL_DATABASE_URL"),
		Brokers:     strings.Split(env("KEEL_KAFKA_BROKERS", "127.0.0.1:9092"), ","),
		Topic:       os.Getenv("KEEL_TOPIC"),
		MetricsAddr: env("KEEL_METRICS_ADDR", "127.0.0.1:9464"),
	}
	var errs []error
	if c.Context == "" {
		errs = append(errs, errors.New("KEEL_CONTEXT is required"))
	}
	if c.DatabaseURL == "" {
		u, err := url.Parse(env("KEEL_PG_URL", "postgres://keel:keel@127.0.0.1:5432/postgres"))
		if err != nil {
			errs = append(errs, fmt.Errorf("KEEL_PG_URL: %w", err))
		} else {
			u.Path = "/keel_" + c.Context
			c.DatabaseURL = u.String()
		}
	}
	if c.Topic == "" {
		c.Topic = topics.Events(c.Context)
	}
	p, err := strconv.ParseInt(env("KEEL_TOPIC_PARTITIONS", "6"), 10, 32)
	if err != nil || p < 1 {
		errs = append(errs, fmt.Errorf("KEEL_TOPIC_PARTITIONS: want a positive number"))
	}
	r, err := strconv.ParseInt(env("KEEL_TOPIC_REPLICATION", "1"), 10, 16)
	if err != nil || r < 1 {
		errs = append(errs, fmt.Errorf("KEEL_TOPIC_REPLICATION: want a positive number"))
	}
	c.Partitions, c.Replication = int32(p), int16(r)
	return c, errors.Join(errs...)
}

func env(k, def string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return def
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, log); err != nil {
		log.Error("keel-relay stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	log.Info("keel-relay starting", "context", cfg.Context, "database", redact(cfg.DatabaseURL),
		"brokers", cfg.Brokers, "topic", cfg.Topic, "metrics", cfg.MetricsAddr)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer pool.Close()
	st, err := pg.New(ctx, pool, pg.Options{Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	defer st.Close()

	if err := ensureTopic(ctx, cfg); err != nil {
		return err
	}
	rl, err := relay.New(relay.Config{Source: st, Brokers: cfg.Brokers, Topic: cfg.Topic,
		EventSource: "keel/" + cfg.Context, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}

	if cfg.MetricsAddr != "" {
		srv := &http.Server{Addr: cfg.MetricsAddr, Handler: metricsMux(reg), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "err", err)
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}
	err = rl.Run(ctx)
	log.Info("keel-relay stopped")
	return err
}

func ensureTopic(ctx context.Context, cfg config) error {
	return topics.EnsureAt(ctx, cfg.Brokers, topics.EventSpec(cfg.Topic, cfg.Partitions, cfg.Replication))
}

func metricsMux(reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	return mux
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}
