// Command carts serves the carts HTTP API, consumes carts.commands (the
// checkout saga's ReopenCart and CloseCart) and runs the abandon timers.
// Configuration (environment):
//
//	KEEL_DATABASE_URL          carts database; default KEEL_PG_URL with database keel_carts
//	KEEL_CATALOG_DATABASE_URL  catalog database read for prices; default KEEL_PG_URL with database keel_catalog
//	KEEL_PG_URL                PostgreSQL server (default postgres://keel:keel@127.0.0.1:5432/postgres)
//	KEEL_HTTP_ADDR             API, /healthz, /readyz, /metrics, /openapi.json (default 127.0.0.1:8082)
//	KEEL_CART_ABANDON_AFTER    inactivity before an open cart is abandoned (default 24h)
//	KEEL_CART_TIMER_INTERVAL   how often due abandon timers are fired (default 30s)
//	KEEL_KAFKA_BROKERS         comma-separated bootstrap brokers (default 127.0.0.1:9092)
//	KEEL_TOPIC_PARTITIONS      partitions when carts.commands is created (default 6)
//	KEEL_TOPIC_REPLICATION     replication factor when it is created (default 1)
//	KEEL_TOPIC_PREFIX          prepended to the topic and consumer group names, to run beside another instance on one broker (tests; default none)
//
// Prices are read from the catalog's read table (see adapters/catalog for
// why not over HTTP). SIGINT or SIGTERM drains HTTP and the consumer, stops
// the timers, waits for accepted commands, then exits.
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
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/keel-commerce/keel/services/carts/adapters/catalog"
	api "github.com/keel-commerce/keel/services/carts/adapters/http"
	"github.com/keel-commerce/keel/services/carts/adapters/kafka"
	"github.com/keel-commerce/keel/services/carts/app"
	"github.com/keel-commerce/keel/services/kit/config"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/idempotency"
)

// Config is the binary's configuration, read from the environment once.
type Config struct {
	DatabaseURL        string
	CatalogDatabaseURL string
	HTTPAddr           string
	AbandonAfter       time.Duration
	TimerInterval      time.Duration
	Brokers            []string
	// Partitions and Replication size carts.commands (and its dead
	// letters) when it does not exist yet.
	Partitions  int32
	Replication int16
	TopicPrefix string
}

func duration(k, def string, errs *[]error) time.Duration {
	d, err := time.ParseDuration(config.Env(k, def))
	if err != nil || d <= 0 {
		*errs = append(*errs, fmt.Errorf("%s: want a positive duration such as %s", k, def))
	}
	return d
}

func load() (Config, error) {
	var errs []error
	db, err := config.DatabaseURL("KEEL_DATABASE_URL", "keel_carts")
	errs = append(errs, err)
	cat, err := config.DatabaseURL("KEEL_CATALOG_DATABASE_URL", "keel_catalog")
	errs = append(errs, err)
	c := Config{DatabaseURL: db, CatalogDatabaseURL: cat, HTTPAddr: config.Env("KEEL_HTTP_ADDR", "127.0.0.1:8082"),
		AbandonAfter: duration("KEEL_CART_ABANDON_AFTER", "24h", &errs), TimerInterval: duration("KEEL_CART_TIMER_INTERVAL", "30s", &errs)}
	c.Brokers, c.Partitions, c.Replication = config.Kafka(&errs)
	c.TopicPrefix = os.Getenv("KEEL_TOPIC_PREFIX")
	return c, errors.Join(errs...)
}

// LogValue masks the database passwords.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("database_url", config.Redact(c.DatabaseURL)),
		slog.String("catalog_database_url", config.Redact(c.CatalogDatabaseURL)), slog.String("http_addr", c.HTTPAddr),
		slog.Duration("abandon_after", c.AbandonAfter), slog.Duration("timer_interval", c.TimerInterval),
		slog.Any("brokers", c.Brokers), slog.Int("partitions", int(c.Partitions)), slog.Int("replication", int(c.Replication)), slog.String("topic_prefix", c.TopicPrefix))
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log); err != nil {
		log.Error("carts failed", "err", err)
		os.Exit(1)
	}
}

// newPool opens a pool of at most maxConns connections on dsn.
func newPool(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = maxConns
	return pgxpool.NewWithConfig(ctx, pcfg)
}

func run(ctx context.Context, log *slog.Logger) error {
	cfg, err := load()
	if err != nil {
		return err
	}
	log.Info("carts starting", "config", cfg)
	// Sized explicitly: pgxpool's default is max(4, CPUs), and the command
	// consumer alone holds up to 8 batch transactions (consume's
	// MaxConcurrentPartitions) whose handlers each need a second connection
	// for the command: with 4 the consumer held them all and every handler
	// and HTTP request waited out its deadline (seen under tools/loadgen).
	// 24 = 8 batches + their 8 handlers + HTTP; idle connections count
	// against the server's max_connections (300 locally, shared by every
	// service and test), so no more.
	pool, err := newPool(ctx, cfg.DatabaseURL, 24)
	if err != nil {
		return fmt.Errorf("carts database: %w", err)
	}
	defer pool.Close()
	catPool, err := newPool(ctx, cfg.CatalogDatabaseURL, 8) // price reads of add-line requests
	if err != nil {
		return fmt.Errorf("catalog database: %w", err)
	}
	defer catPool.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	st, err := pg.New(ctx, pool, pg.Options{Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	defer st.Close()
	svc, err := app.New(ctx, st, catalog.New(catPool), app.Config{AbandonAfter: cfg.AbandonAfter, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	defer svc.Close() // after the server and the consumer drained and the timers stopped
	if err := idempotency.Migrate(ctx, pool); err != nil {
		return err
	}
	keys, err := idempotency.New(pool, idempotency.Config{Logger: log})
	if err != nil {
		return err
	}
	cmdTopic := cfg.TopicPrefix + topics.Commands("carts")
	if err := ensureTopics(ctx, cfg, cmdTopic); err != nil {
		return err
	}
	h, err := kafka.NewHandler(svc, log)
	if err != nil {
		return err
	}
	consumer, err := kafka.NewConsumer(kafka.Config{Brokers: cfg.Brokers, Group: cfg.TopicPrefix + kafka.Group, Topics: []string{cmdTopic},
		Pool: pool, Logger: log, Registerer: reg}, h)
	if err != nil {
		return err
	}
	metrics, err := httpapi.NewMetrics(reg)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	api.New(svc, keys, log).Register(mux)
	httpapi.Ops{Logger: log, Registry: reg, OpenAPI: api.OpenAPI, Checks: []httpapi.Check{
		{Name: "postgres", Func: pool.Ping},
		{Name: "catalog", Func: catPool.Ping},
	}}.Register(mux)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return svc.Timers().Run(gctx, cfg.TimerInterval) })
	g.Go(func() error {
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-time.After(time.Hour):
				if _, err := keys.PurgeExpired(gctx); err != nil && gctx.Err() == nil {
					log.Warn("carts: purge idempotency keys", "err", err)
				}
			}
		}
	})
	g.Go(func() error {
		if err := consumer.Run(gctx); err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("commands consumer: %w", err)
		}
		return nil
	})
	g.Go(func() error { return httpapi.NewServer(log).Run(gctx, cfg.HTTPAddr, httpapi.Wrap(mux, log, metrics)) })
	return g.Wait()
}

func ensureTopics(ctx context.Context, cfg Config, topic string) error {
	return topics.EnsureAt(ctx, cfg.Brokers, topics.WithDLQ(topic, cfg.Partitions, cfg.Replication)...)
}
