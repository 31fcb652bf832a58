// Command orders serves the orders HTTP API and the orders.commands Kafka
// consumer: orders placed from checkouts, confirmed, paid, shipped or
// cancelled. Configuration (environment):
//
//	KEEL_DATABASE_URL       the orders database; default KEEL_PG_URL with database keel_orders
//	KEEL_PG_URL             PostgreSQL server (default postgres://keel:keel@127.0.0.1:5432/postgres)
//	KEEL_HTTP_ADDR          API, /healthz, /readyz, /metrics, /openapi.json (default 127.0.0.1:8083)
//	KEEL_KAFKA_BROKERS      comma-separated bootstrap brokers (default 127.0.0.1:9092)
//	KEEL_TOPIC_PARTITIONS   partitions when orders.commands is created (default 6)
//	KEEL_TOPIC_REPLICATION  replication factor when it is created (default 1)
//	KEEL_TOPIC_PREFIX       prepended to every Kafka topic and consumer group name, to run beside another instance on one broker (tests; default none)
//	KEEL_KAFKA_INSTANCE_ID  static consumer-group member id: a restarted process takes its partitions back at once (default none: dynamic)
//
// SIGINT or SIGTERM drains HTTP and the consumer, waits for accepted
// commands, then exits.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/keel-commerce/keel/services/kit/config"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/idempotency"
	"github.com/keel-commerce/keel/services/kit/workers"
	api "github.com/keel-commerce/keel/services/orders/adapters/http"
	"github.com/keel-commerce/keel/services/orders/adapters/kafka"
	"github.com/keel-commerce/keel/services/orders/app"
)

// Config is the binary's configuration, read from the environment once.
type Config struct {
	DatabaseURL string
	HTTPAddr    string
	// MaxConns sizes the database pool.
	MaxConns int32
	Brokers  []string
	// Partitions and Replication size orders.commands (and its dead
	// letters) when it does not exist yet.
	Partitions  int32
	Replication int16
	TopicPrefix string
	InstanceID  string
}

func load() (Config, error) {
	db, err := config.DatabaseURL("KEEL_DATABASE_URL", "keel_orders")
	if err != nil {
		return Config{}, err
	}
	c := Config{DatabaseURL: db, HTTPAddr: config.Env("KEEL_HTTP_ADDR", "127.0.0.1:8083"), MaxConns: 32}
	var errs []error
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("KEEL_HTTP_ADDR is empty"))
	}
	c.Brokers, c.Partitions, c.Replication = config.Kafka(&errs)
	c.TopicPrefix = os.Getenv("KEEL_TOPIC_PREFIX")
	c.InstanceID = os.Getenv("KEEL_KAFKA_INSTANCE_ID")
	return c, errors.Join(errs...)
}

// LogValue masks the database password.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("database_url", config.Redact(c.DatabaseURL)), slog.String("http_addr", c.HTTPAddr), slog.Int("max_conns", int(c.MaxConns)),
		slog.Any("brokers", c.Brokers), slog.Int("partitions", int(c.Partitions)), slog.Int("replication", int(c.Replication)), slog.String("topic_prefix", c.TopicPrefix))
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
	// Close after the HTTP server and the consumer drained (defers run in
	// reverse).
	defer svc.Close()
	if err := idempotency.Migrate(ctx, pool); err != nil {
		return err
	}
	keys, err := idempotency.New(pool, idempotency.Config{Logger: log})
	if err != nil {
		return err
	}
	cmdTopic := cfg.TopicPrefix + topics.Commands("orders")
	if err := ensureTopics(ctx, cfg, cmdTopic); err != nil {
		return err
	}
	h, err := kafka.NewHandler(svc, log)
	if err != nil {
		return err
	}
	consumer, err := kafka.NewConsumer(kafka.Config{Brokers: cfg.Brokers, Group: cfg.TopicPrefix + kafka.Group, Topics: []string{cmdTopic},
		InstanceID: cfg.InstanceID, Pool: pool, Logger: log, Registerer: reg}, h)
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

	// Two workers; the first to fail stops the other.
	return workers.Run(ctx, log,
		workers.Worker{Name: "http", Run: func(ctx context.Context) error {
			return httpapi.NewServer(log).Run(ctx, cfg.HTTPAddr, httpapi.Wrap(mux, log, metrics))
		}},
		workers.Worker{Name: "commands consumer", Run: consumer.Run})
}

func ensureTopics(ctx context.Context, cfg Config, topic string) error {
	return topics.EnsureAt(ctx, cfg.Brokers, topics.WithDLQ(topic, cfg.Partitions, cfg.Replication)...)
}
