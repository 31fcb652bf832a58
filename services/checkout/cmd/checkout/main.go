// Command checkout is the checkout saga: the process manager consuming
// carts.events, orders.events, stock.events and payments.events (consumer
// group checkout-saga), its durable timer worker, the relay publishing its
// store (keel_checkout) with a route — the saga's events to checkout.events,
// its outbox commands to <context>.commands — and the HTTP read API
// (GET /checkouts/{id}) with /healthz, /readyz and /metrics.
//
// Configuration, all from the environment:
//
//	KEEL_DATABASE_URL              the saga's database; default KEEL_PG_URL with database keel_checkout
//	KEEL_PG_URL                    PostgreSQL server (default postgres://keel:keel@127.0.0.1:5432/postgres)
//	KEEL_KAFKA_BROKERS             comma-separated bootstrap brokers (default 127.0.0.1:9092)
//	KEEL_HTTP_ADDR                 HTTP listen address (default 127.0.0.1:8085)
//	KEEL_CHECKOUT_PAYMENT_TIMEOUT  wait for the payment's authorization (default 10m)
//	KEEL_CHECKOUT_TIMEOUT          whole checkout until confirming; also the reservation's ttl (default 15m)
//	KEEL_CHECKOUT_TIMER_INTERVAL   how often due timers are fired (default 1s)
//	KEEL_TOPIC_PARTITIONS          partitions of topics it creates (default 6)
//	KEEL_TOPIC_REPLICATION         replication factor of topics it creates (default 1)
//	KEEL_LOG_LEVEL                 debug, info, warn or error (default info)
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

	"github.com/keel-commerce/keel/events/consume"
	"github.com/keel-commerce/keel/events/relay"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/topics"
	checkouthttp "github.com/keel-commerce/keel/services/checkout/adapters/http"
	"github.com/keel-commerce/keel/services/checkout/app"
	"github.com/keel-commerce/keel/services/checkout/domain"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/workers"
)

type config struct {
	DatabaseURL     string
	Brokers         []string
	HTTPAddr        string
	PaymentTimeout  time.Duration
	CheckoutTimeout time.Duration
	TimerInterval   time.Duration
	Partitions      int32
	Replication     int16
	LogLevel        slog.Level
}

func loadConfig(getenv func(string) (string, bool)) (config, error) {
	env := func(k, def string) string {
		if v, ok := getenv(k); ok {
			return v
		}
		return def
	}
	c := config{
		DatabaseURL: env("KEEL_DATABASE_URL", ""),
		Brokers:     list(env("KEEL_KAFKA_BROKERS", "127.0.0.1:9092")),
		HTTPAddr:    env("KEEL_HTTP_ADDR", "127.0.0.1:8085"),
	}
	var errs []error
	if c.DatabaseURL == "" {
		u, err := url.Parse(env("KEEL_PG_URL", "postgres://keel:keel@127.0.0.1:5432/postgres"))
		if err != nil {
			errs = append(errs, fmt.Errorf("KEEL_PG_URL: %w", err))
		} else {
			u.Path = "/keel_checkout"
			c.DatabaseURL = u.String()
		}
	}
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("KEEL_KAFKA_BROKERS: no brokers"))
	}
	duration := func(k string, def time.Duration) time.Duration {
		d, err := time.ParseDuration(env(k, def.String()))
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s: want a positive duration such as %s", k, def))
		}
		return d
	}
	c.PaymentTimeout = duration("KEEL_CHECKOUT_PAYMENT_TIMEOUT", domain.DefaultPaymentTimeout)
	c.CheckoutTimeout = duration("KEEL_CHECKOUT_TIMEOUT", domain.DefaultCheckoutTimeout)
	c.TimerInterval = duration("KEEL_CHECKOUT_TIMER_INTERVAL", time.Second)
	if c.PaymentTimeout > 0 && c.CheckoutTimeout > 0 && c.PaymentTimeout >= c.CheckoutTimeout {
		errs = append(errs, fmt.Errorf("KEEL_CHECKOUT_PAYMENT_TIMEOUT %s must be shorter than KEEL_CHECKOUT_TIMEOUT %s", c.PaymentTimeout, c.CheckoutTimeout))
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
	if err := c.LogLevel.UnmarshalText([]byte(env("KEEL_LOG_LEVEL", "info"))); err != nil {
		errs = append(errs, fmt.Errorf("KEEL_LOG_LEVEL: %w", err))
	}
	return c, errors.Join(errs...)
}

// attrs is the config for the start-up log line, the password masked.
func (c config) attrs() []any {
	return []any{"database", redact(c.DatabaseURL), "brokers", c.Brokers, "http", c.HTTPAddr,
		"payment_timeout", c.PaymentTimeout.String(), "checkout_timeout", c.CheckoutTimeout.String(),
		"timer_interval", c.TimerInterval.String(), "partitions", c.Partitions, "replication", c.Replication}
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
	cfg, err := loadConfig(os.LookupEnv)
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	if err != nil {
		log.Error("checkout: invalid config", "err", err)
		os.Exit(2)
	}
	if err := run(ctx, cfg, log); err != nil {
		log.Error("checkout stopped", "err", err)
		os.Exit(1)
	}
}

// run wires the saga by hand and serves until ctx ends. The consumer, the
// timer worker, the relay and the HTTP server run side by side; the first
// to fail stops the others.
func run(ctx context.Context, cfg config, log *slog.Logger) error {
	log.Info("checkout starting", cfg.attrs()...)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("database url: %w", err)
	}
	pcfg.MaxConns = 32 // 8 consumer batches, each with a saga transaction, plus timers, relay and HTTP
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
	m, err := app.NewMetrics(reg)
	if err != nil {
		return err
	}
	saga, err := app.New(ctx, app.Config{Store: st, Logger: log, Metrics: m,
		Domain: domain.Config{PaymentTimeout: cfg.PaymentTimeout, CheckoutTimeout: cfg.CheckoutTimeout}})
	if err != nil {
		return err
	}
	if err := ensureTopics(ctx, cfg); err != nil {
		return err
	}
	consumer, err := consume.New(consume.Config{Brokers: cfg.Brokers, Group: app.Group, Topics: app.InputTopics(),
		Pool: pool, Logger: log, Registerer: reg}, saga)
	if err != nil {
		return err
	}
	rel, err := relay.New(relay.Config{Source: st, Brokers: cfg.Brokers, Topic: topics.Events("checkout"),
		Route: app.Route(""), EventSource: "keel/checkout", Name: "relay:checkout-saga",
		Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	metrics, err := httpapi.NewMetrics(reg)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	checkouthttp.New(saga, log).Register(mux)
	httpapi.Ops{Logger: log, Registry: reg, OpenAPI: checkouthttp.OpenAPI, Checks: []httpapi.Check{{Name: "postgres", Func: pool.Ping}}}.Register(mux)

	err = workers.Run(ctx, log,
		workers.Worker{Name: "http", Run: func(ctx context.Context) error {
			return httpapi.NewServer(log).Run(ctx, cfg.HTTPAddr, httpapi.Wrap(mux, log, metrics))
		}},
		workers.Worker{Name: "consumer", Run: consumer.Run},
		workers.Worker{Name: "relay", Run: rel.Run},
		workers.Worker{Name: "timers", Run: func(ctx context.Context) error { saga.RunTimers(ctx, cfg.TimerInterval); return nil }})
	log.Info("checkout stopped")
	return err
}

// ensureTopics creates what the saga reads (the input topics and their
// dead-letter topics) and what its relay writes (checkout.events and the
// commands topics) if they are missing.
func ensureTopics(ctx context.Context, cfg config) error {
	var specs []topics.Spec
	for _, t := range app.InputTopics() {
		specs = append(specs, topics.WithDLQ(t, cfg.Partitions, cfg.Replication)...)
	}
	specs = append(specs, topics.EventSpec(topics.Events("checkout"), cfg.Partitions, cfg.Replication))
	for _, c := range []string{"stock", "orders", "payments", "carts"} {
		specs = append(specs, topics.EventSpec(topics.Commands(c), cfg.Partitions, cfg.Replication))
	}
	return topics.EnsureAt(ctx, cfg.Brokers, specs...)
}
