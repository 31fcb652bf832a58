// Command payments serves the payments HTTP API and the payments.commands
// Kafka consumer: authorize, capture, void and refund through the built-in
// provider simulator. Configuration (environment):
//
//	KEEL_DATABASE_URL            the payments database; default KEEL_PG_URL with database keel_payments
//	KEEL_PG_URL                  PostgreSQL server (default postgres://keel:keel@127.0.0.1:5432/postgres)
//	KEEL_HTTP_ADDR               API, /healthz, /readyz, /metrics, /openapi.json (default 127.0.0.1:8084)
//	KEEL_PAYMENTS_SEED           simulator seed (default 1)
//	KEEL_PAYMENTS_DECLINE_RATE   share of authorizations declined, 0..1 (default 0)
//	KEEL_PAYMENTS_TIMEOUT_RATE   share of calls timing out without acting (default 0)
//	KEEL_PAYMENTS_AMBIGUOUS_RATE share of calls timing out after acting (default 0)
//	KEEL_PAYMENTS_LATENCY        latency of every provider call, a Go duration (default 0)
//	KEEL_PAYMENTS_SIM_BOOKS      file keeping the simulator's books across restarts, as a real provider would (crash tests; default: in memory)
//	KEEL_KAFKA_BROKERS           comma-separated bootstrap brokers (default 127.0.0.1:9092)
//	KEEL_TOPIC_PARTITIONS        partitions when payments.commands is created (default 6)
//	KEEL_TOPIC_REPLICATION       replication factor when it is created (default 1)
//	KEEL_TOPIC_PREFIX            prepended to every Kafka topic and consumer group name, to run beside another instance on one broker (tests; default none)
//	KEEL_KAFKA_INSTANCE_ID       static consumer-group member id: a restarted process takes its partitions back at once (default none: dynamic)
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
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/keel-commerce/keel/services/kit/config"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/idempotency"
	"github.com/keel-commerce/keel/services/kit/workers"
	api "github.com/keel-commerce/keel/services/payments/adapters/http"
	"github.com/keel-commerce/keel/services/payments/adapters/kafka"
	"github.com/keel-commerce/keel/services/payments/app"
	"github.com/keel-commerce/keel/services/payments/gateway"
	"github.com/keel-commerce/keel/services/payments/gateway/sim"
)

// Config is the binary's configuration, read from the environment once.
type Config struct {
	DatabaseURL string
	HTTPAddr    string
	// MaxConns sizes the database pool.
	MaxConns int32
	// Sim configures the built-in provider simulator; SimBooks, when set,
	// is the file its books survive restarts in.
	Sim      sim.Config
	SimBooks string
	Brokers  []string
	// Partitions and Replication size payments.commands (and its dead
	// letters) when it does not exist yet.
	Partitions  int32
	Replication int16
	TopicPrefix string
	InstanceID  string
}

func load() (Config, error) {
	db, err := config.DatabaseURL("KEEL_DATABASE_URL", "keel_payments")
	if err != nil {
		return Config{}, err
	}
	c := Config{DatabaseURL: db, HTTPAddr: config.Env("KEEL_HTTP_ADDR", "127.0.0.1:8084"), MaxConns: 32}
	var errs []error
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("KEEL_HTTP_ADDR is empty"))
	}
	if c.Sim.Seed, err = strconv.ParseUint(config.Env("KEEL_PAYMENTS_SEED", "1"), 10, 64); err != nil {
		errs = append(errs, fmt.Errorf("KEEL_PAYMENTS_SEED: %w", err))
	}
	for _, r := range []struct {
		name string
		dst  *float64
	}{{"KEEL_PAYMENTS_DECLINE_RATE", &c.Sim.DeclineRate}, {"KEEL_PAYMENTS_TIMEOUT_RATE", &c.Sim.TimeoutRate},
		{"KEEL_PAYMENTS_AMBIGUOUS_RATE", &c.Sim.AmbiguousRate}} {
		if *r.dst, err = strconv.ParseFloat(config.Env(r.name, "0"), 64); err != nil || *r.dst < 0 || *r.dst > 1 {
			errs = append(errs, fmt.Errorf("%s: want a number in [0, 1]", r.name))
		}
	}
	if c.Sim.Latency, err = time.ParseDuration(config.Env("KEEL_PAYMENTS_LATENCY", "0s")); err != nil || c.Sim.Latency < 0 {
		errs = append(errs, errors.New("KEEL_PAYMENTS_LATENCY: want a non-negative Go duration, e.g. 50ms"))
	}
	c.Brokers, c.Partitions, c.Replication = config.Kafka(&errs)
	c.TopicPrefix = os.Getenv("KEEL_TOPIC_PREFIX")
	c.InstanceID = os.Getenv("KEEL_KAFKA_INSTANCE_ID")
	c.SimBooks = os.Getenv("KEEL_PAYMENTS_SIM_BOOKS")
	return c, errors.Join(errs...)
}

// LogValue masks the database password.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("database_url", config.Redact(c.DatabaseURL)), slog.String("http_addr", c.HTTPAddr), slog.Int("max_conns", int(c.MaxConns)),
		slog.Any("brokers", c.Brokers), slog.Int("partitions", int(c.Partitions)), slog.Int("replication", int(c.Replication)), slog.String("topic_prefix", c.TopicPrefix),
		slog.Group("simulator", "seed", c.Sim.Seed, "decline_rate", c.Sim.DeclineRate, "timeout_rate", c.Sim.TimeoutRate,
			"ambiguous_rate", c.Sim.AmbiguousRate, "latency", c.Sim.Latency.String(), "books", c.SimBooks))
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log); err != nil {
		log.Error("payments failed", "err", err)
		os.Exit(1)
	}
	log.Info("payments stopped")
}

func run(ctx context.Context, log *slog.Logger) error {
	cfg, err := load()
	if err != nil {
		return err
	}
	log.Info("payments starting", "config", cfg)
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
	var gw gateway.Gateway
	if cfg.SimBooks != "" {
		gw, err = sim.NewDurable(cfg.Sim, cfg.SimBooks)
	} else {
		gw, err = sim.New(cfg.Sim)
	}
	if err != nil {
		return err
	}
	svc, err := app.New(ctx, st, app.Config{Gateway: gw, Logger: log, Registerer: reg})
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
	cmdTopic := cfg.TopicPrefix + topics.Commands("payments")
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
