// Command keel-projections runs the read side: the live builder of every
// projection (each its own consumer group, projection.<name>, on its
// sources' <context>.events topics) and the query API over their active
// copies, with /healthz, /readyz, /metrics and /openapi.json.
//
// Configuration, all from the environment:
//
//	KEEL_DATABASE_URL   the projections database; default KEEL_PG_URL with database keel_projections
//	KEEL_PG_URL         PostgreSQL server (default postgres://keel:keel@127.0.0.1:5432/postgres)
//	KEEL_KAFKA_BROKERS  comma-separated bootstrap brokers (default 127.0.0.1:9092)
//	KEEL_TOPIC_PARTITIONS   partitions of a source or dead-letter topic it creates (default 6), as the services
//	KEEL_TOPIC_REPLICATION  their replication factor (default 1)
//	KEEL_HTTP_ADDR      HTTP listen address (default 127.0.0.1:8090)
//	KEEL_TOPIC_PREFIX   prepended to every topic and consumer group name (tests; default none)
//	KEEL_KAFKA_INSTANCE_ID  static member id of every builder's group: a restarted process takes its partitions back at once (default none: dynamic)
//	KEEL_LOG_LEVEL      debug, info, warn or error (default info)
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

	"github.com/keel-commerce/keel/events/topics"
	"github.com/keel-commerce/keel/projections/all"
	"github.com/keel-commerce/keel/projections/queryapi"
	"github.com/keel-commerce/keel/projections/readmodel"
	"github.com/keel-commerce/keel/services/kit/config"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/workers"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "keel-projections:", err)
		os.Exit(1)
	}
}

func env(k, def string) string {
	if v, ok := os.LookupEnv(k); ok && v != "" {
		return v
	}
	return def
}

func run() error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(env("KEEL_LOG_LEVEL", "info"))); err != nil {
		return fmt.Errorf("KEEL_LOG_LEVEL: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	dbURL := env("KEEL_DATABASE_URL", "")
	if dbURL == "" {
		u, err := url.Parse(env("KEEL_PG_URL", "postgres://keel:keel@127.0.0.1:5432/postgres"))
		if err != nil {
			return fmt.Errorf("KEEL_PG_URL: %w", err)
		}
		u.Path = "/keel_projections"
		dbURL = u.String()
	}
	var errs []error
	brokers, partitions, replication := config.Kafka(&errs)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	prefix := env("KEEL_TOPIC_PREFIX", "")
	addr := env("KEEL_HTTP_ADDR", "127.0.0.1:8090")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("KEEL_DATABASE_URL: %w", err)
	}
	cfg.MaxConns = 32 // six builders × up to 8 partition transactions, and the API
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	ps := all.All()
	topicOf := func(c string) string { return prefix + topics.Events(c) }
	// The source topics are the services' to create; the dead-letter
	// topics of this consumer are ours.
	var dlqs []topics.Spec
	seen := map[string]bool{}
	for _, p := range ps {
		for _, t := range readmodel.Topics(p, topicOf) {
			if !seen[t] {
				seen[t] = true
				dlqs = append(dlqs, topics.WithDLQ(t, partitions, replication)...)
			}
		}
	}
	if err := topics.EnsureAt(ctx, brokers, dlqs...); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := httpapi.NewMetrics(reg)
	if err != nil {
		return err
	}
	waiter := readmodel.NewWaiter(pool, log)
	mux := http.NewServeMux()
	queryapi.New(pool, waiter, log).Register(mux)
	httpapi.Ops{Logger: log, Registry: reg, OpenAPI: queryapi.OpenAPI,
		Checks: []httpapi.Check{{Name: "postgres", Func: pool.Ping}}}.Register(mux)

	log.Info("keel-projections starting", "http", addr, "brokers", brokers, "projections", len(ps), "topic_prefix", prefix)
	return workers.Run(ctx, log,
		workers.Worker{Name: "builders", Run: func(ctx context.Context) error {
			return readmodel.RunBuilders(ctx, readmodel.RunConfig{Brokers: brokers, Pool: pool, Logger: log, Registerer: reg,
				TopicOf: topicOf, GroupOf: func(p string) string { return prefix + readmodel.Group(p) },
				InstanceID: os.Getenv("KEEL_KAFKA_INSTANCE_ID")}, ps...)
		}},
		workers.Worker{Name: "waiter", Run: waiter.Run},
		workers.Worker{Name: "http", Run: func(ctx context.Context) error {
			return httpapi.NewServer(log).Run(ctx, addr, httpapi.Wrap(mux, log, metrics))
		}},
	)
}
