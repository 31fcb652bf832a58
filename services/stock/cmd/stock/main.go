// Command stock is the stock service: the HTTP command API, the
// stock.commands Kafka consumer and the durable reservation-expiry timers,
// over the keel_stock event store (published to stock.events by the
// stock relay, keel-relay with KEEL_CONTEXT=stock).
//
// Configuration, all from the environment:
//
//	KEEL_DATABASE_URL          the stock database; default KEEL_PG_URL with database keel_stock
//	KEEL_PG_URL                PostgreSQL server (default postgres://keel:keel@127.0.0.1:5432/postgres)
//	KEEL_KAFKA_BROKERS         comma-separated bootstrap brokers (default 127.0.0.1:9092)
//	KEEL_HTTP_ADDR             HTTP listen address (default 127.0.0.1:8081)
//	KEEL_STOCK_TTL             reservation time to live (default 15m)
//	KEEL_STOCK_TTL_BY_METHOD   per payment method, e.g. card=15m,invoice=72h
//	KEEL_STOCK_WAREHOUSES      warehouse priority, e.g. wh-1,wh-2 (others follow by id)
//	KEEL_STOCK_TIMER_INTERVAL  how often due reservations are expired (default 1s)
//	KEEL_TOPIC_PARTITIONS      partitions when stock.commands is created (default 6)
//	KEEL_TOPIC_REPLICATION     replication factor when it is created (default 1)
//	KEEL_TOPIC_PREFIX          prepended to every Kafka topic and consumer group name, to run beside another instance on one broker (tests; default none)
//	KEEL_KAFKA_INSTANCE_ID     static consumer-group member id: a restarted process takes its partitions back at once (default none: dynamic)
//	KEEL_LOG_LEVEL             debug, info, warn or error (default info)
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

	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/idempotency"
	"github.com/keel-commerce/keel/services/kit/workers"
	stockhttp "github.com/keel-commerce/keel/services/stock/adapters/http"
	"github.com/keel-commerce/keel/services/stock/adapters/kafka"
	"github.com/keel-commerce/keel/services/stock/app"
)

type config struct {
	DatabaseURL   string
	Brokers       []string
	HTTPAddr      string
	TTL           time.Duration
	TTLByMethod   map[string]time.Duration
	Warehouses    []string
	TimerInterval time.Duration
	Partitions    int32
	Replication   int16
	TopicPrefix   string
	InstanceID    string
	LogLevel      slog.Level
}

func loadConfig() (config, error) {
	c := config{
		DatabaseURL: os.Getenv("KEEL_DATABASE_URL"),
		Brokers:     list(env("KEEL_KAFKA_BROKERS", "127.0.0.1:9092")),
		HTTPAddr:    env("KEEL_HTTP_ADDR", "127.0.0.1:8081"),
		Warehouses:  list(os.Getenv("KEEL_STOCK_WAREHOUSES")),
		TTLByMethod: map[string]time.Duration{},
	}
	var errs []error
	if c.DatabaseURL == "" {
		u, err := url.Parse(env("KEEL_PG_URL", "postgres://keel:keel@127.0.0.1:5432/postgres"))
		if err != nil {
			errs = append(errs, fmt.Errorf("KEEL_PG_URL: %w", err))
		} else {
			u.Path = "/keel_stock"
			c.DatabaseURL = u.String()
		}
	}
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("KEEL_KAFKA_BROKERS: no brokers"))
	}
	var err error
	if c.TTL, err = time.ParseDuration(env("KEEL_STOCK_TTL", app.DefaultTTL.String())); err != nil || c.TTL <= 0 {
		errs = append(errs, fmt.Errorf("KEEL_STOCK_TTL: want a positive duration such as 15m"))
	}
	for _, kv := range list(os.Getenv("KEEL_STOCK_TTL_BY_METHOD")) {
		m, v, ok := strings.Cut(kv, "=")
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if !ok || strings.TrimSpace(m) == "" || err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("KEEL_STOCK_TTL_BY_METHOD: %q: want method=duration, e.g. invoice=72h", kv))
			continue
		}
		c.TTLByMethod[strings.TrimSpace(m)] = d
	}
	if c.TimerInterval, err = time.ParseDuration(env("KEEL_STOCK_TIMER_INTERVAL", "1s")); err != nil || c.TimerInterval <= 0 {
		errs = append(errs, fmt.Errorf("KEEL_STOCK_TIMER_INTERVAL: want a positive duration"))
	}
	p, err := strconv.ParseInt(env("KEEL_TOPIC_PARTITIONS", "6"), 10, 32)
	if err != nil || p < 1 {
		errs = append(errs, errors.New("KEEL_TOPIC_PARTITIONS: want a positive number"))
	}
	r, err := strconv.ParseInt(env("KEEL_TOPIC_REPLICATION", "1"), 10, 16)
	if err != nil || r < 1 {
		errs = append(errs, errors.New("KEEL_TOPIC_REPLICATION: want a positive number"))
	}
	c.Partitions, c.Replication = int32(p), int16(r)
	c.TopicPrefix = os.Getenv("KEEL_TOPIC_PREFIX")
	c.InstanceID = os.Getenv("KEEL_KAFKA_INSTANCE_ID")
	if err := c.LogLevel.UnmarshalText([]byte(env("KEEL_LOG_LEVEL", "info"))); err != nil {
		errs = append(errs, fmt.Errorf("KEEL_LOG_LEVEL: %w", err))
	}
	return c, errors.Join(errs...)
}

// attrs is the config for the start-up log line, the password masked.
func (c config) attrs() []any {
	return []any{"database", redact(c.DatabaseURL), "brokers", c.Brokers, "http", c.HTTPAddr, "ttl", c.TTL.String(),
		"ttl_by_method", fmt.Sprint(c.TTLByMethod), "warehouses", c.Warehouses, "timer_interval", c.TimerInterval.String(),
		"partitions", c.Partitions, "replication", c.Replication, "topic_prefix", c.TopicPrefix}
}

func env(k, def string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return def
}

func list(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg, err := loadConfig()
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	if err != nil {
		log.Error("stock: invalid config", "err", err)
		os.Exit(2)
	}
	if err := run(ctx, cfg, log); err != nil {
		log.Error("stock stopped", "err", err)
		os.Exit(1)
	}
}

// run wires the service by hand and serves until ctx ends, then drains:
// the HTTP server and the consumer stop taking work, the command handler
// finishes what it accepted, and only then do the store and pool close.
func run(ctx context.Context, cfg config, log *slog.Logger) error {
	log.Info("stock starting", cfg.attrs()...)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("database url: %w", err)
	}
	pcfg.MaxConns = 32
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer pool.Close()
	st, err := pg.New(ctx, pool, pg.Options{Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	defer st.Close()
	svc, err := app.New(ctx, st, app.Config{DefaultTTL: cfg.TTL, TTLByPaymentMethod: cfg.TTLByMethod,
		WarehousePriority: cfg.Warehouses, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	defer svc.Close() // runs before st.Close and pool.Close: accepted commands finish first
	if err := idempotency.Migrate(ctx, pool); err != nil {
		return err
	}
	keys, err := idempotency.New(pool, idempotency.Config{Logger: log})
	if err != nil {
		return err
	}

	cmdTopic := cfg.TopicPrefix + topics.Commands("stock")
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
	stockhttp.New(svc, keys, log).Register(mux)
	httpapi.Ops{Logger: log, Registry: reg, OpenAPI: stockhttp.OpenAPI,
		Checks: []httpapi.Check{{Name: "postgres", Func: pool.Ping}}}.Register(mux)

	// Supervised: an outage restarts the worker it broke; a bug stops all.
	err = workers.Run(ctx, log,
		workers.Worker{Name: "http", Run: func(ctx context.Context) error {
			return httpapi.NewServer(log).Run(ctx, cfg.HTTPAddr, httpapi.Wrap(mux, log, metrics))
		}},
		workers.Worker{Name: "commands consumer", Run: consumer.Run},
		workers.Worker{Name: "timers", Run: func(ctx context.Context) error { return svc.Timers().Run(ctx, cfg.TimerInterval) }},
		workers.Worker{Name: "purge idempotency keys", Run: func(ctx context.Context) error { return keys.RunPurge(ctx, time.Hour) }})
	log.Info("stock stopped")
	return err
}

func ensureTopics(ctx context.Context, cfg config, topic string) error {
	return topics.EnsureAt(ctx, cfg.Brokers, topics.WithDLQ(topic, cfg.Partitions, cfg.Replication)...)
}
