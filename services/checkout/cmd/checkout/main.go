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
//	KEEL_CHECKOUT_RESOLVE_BACKOFF  wait before asking the provider again about an unanswered authorization,
//	                               doubling per attempt; the first is asked at once (default 1m)
//	KEEL_CHECKOUT_RESOLVE_ATTEMPTS attempts before an unanswered authorization is left to an operator (default 6)
//	KEEL_TOPIC_PARTITIONS          partitions of topics it creates (default 6)
//	KEEL_TOPIC_REPLICATION         replication factor of topics it creates (default 1)
//	KEEL_TOPIC_PREFIX              prepended to every Kafka topic and consumer group name, to run beside another instance on one broker (tests; default none)
//	KEEL_KAFKA_INSTANCE_ID         static consumer-group member id: a restarted process takes its partitions back at once (default none: dynamic)
//	KEEL_LOG_LEVEL                 debug, info, warn or error (default info)
//	KEEL_CRASH_AT                  fault injection for crash tests: <transition>@<n> kills the process
//	                               with SIGKILL right after the nth committed input recording that
//	                               transition (see app.Transition), e.g. compensating@2; never in production
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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/protobuf/proto"

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
	ResolveBackoff  time.Duration
	ResolveAttempts int
	TimerInterval   time.Duration
	Partitions      int32
	Replication     int16
	TopicPrefix     string
	InstanceID      string
	LogLevel        slog.Level
	// CrashAt and CrashAfter: fault injection, see crashHook.
	CrashAt    string
	CrashAfter int
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
	c.ResolveBackoff = duration("KEEL_CHECKOUT_RESOLVE_BACKOFF", domain.DefaultResolveBackoff)
	if n, err := strconv.Atoi(env("KEEL_CHECKOUT_RESOLVE_ATTEMPTS", strconv.Itoa(domain.DefaultResolveAttempts))); err != nil || n < 1 {
		errs = append(errs, errors.New("KEEL_CHECKOUT_RESOLVE_ATTEMPTS: want a positive number"))
	} else {
		c.ResolveAttempts = n
	}
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
	c.TopicPrefix = env("KEEL_TOPIC_PREFIX", "")
	c.InstanceID = env("KEEL_KAFKA_INSTANCE_ID", "")
	if v := env("KEEL_CRASH_AT", ""); v != "" {
		kind, n, ok := strings.Cut(v, "@")
		count, err := strconv.Atoi(n)
		if !ok || kind == "" || err != nil || count < 1 {
			errs = append(errs, fmt.Errorf("KEEL_CRASH_AT %q: want <transition>@<n>, e.g. step:reserve_stock@3", v))
		}
		c.CrashAt, c.CrashAfter = kind, count
	}
	if err := c.LogLevel.UnmarshalText([]byte(env("KEEL_LOG_LEVEL", "info"))); err != nil {
		errs = append(errs, fmt.Errorf("KEEL_LOG_LEVEL: %w", err))
	}
	return c, errors.Join(errs...)
}

// attrs is the config for the start-up log line, the password masked.
func (c config) attrs() []any {
	return []any{"database", redact(c.DatabaseURL), "brokers", c.Brokers, "http", c.HTTPAddr,
		"payment_timeout", c.PaymentTimeout.String(), "checkout_timeout", c.CheckoutTimeout.String(),
		"timer_interval", c.TimerInterval.String(), "partitions", c.Partitions, "replication", c.Replication, "topic_prefix", c.TopicPrefix, "crash_at", c.CrashAt, "crash_after", c.CrashAfter}
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
		Domain: domain.Config{PaymentTimeout: cfg.PaymentTimeout, CheckoutTimeout: cfg.CheckoutTimeout,
			ResolveBackoff: cfg.ResolveBackoff, ResolveAttempts: cfg.ResolveAttempts},
		Committed: crashHook(cfg.CrashAt, cfg.CrashAfter, log)})
	if err != nil {
		return err
	}
	if err := ensureTopics(ctx, cfg); err != nil {
		return err
	}
	consumer, err := consume.New(consume.Config{Brokers: cfg.Brokers, Group: cfg.TopicPrefix + app.Group, Topics: cfg.inputTopics(),
		InstanceID: cfg.InstanceID, Pool: pool, Logger: log, Registerer: reg,
		// A batch transaction holds the saga's relay back until it
		// commits (the store's read horizon): keep each one short.
		MaxBatchRecords: sagaBatchRecords}, saga)
	if err != nil {
		return err
	}
	rel, err := relay.New(relay.Config{Source: st, Brokers: cfg.Brokers, Topic: cfg.TopicPrefix + topics.Events("checkout"),
		Route: app.Route(cfg.TopicPrefix), EventSource: "keel/checkout", Name: "relay:" + cfg.TopicPrefix + "checkout-saga",
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

// sagaBatchRecords bounds the inputs of one saga transaction. Measured with
// the checkout bench at 12/s offered: whole polls made batches of 300+ ms
// and commands left in bursts.
const sagaBatchRecords = 16

// crashHook is the fault injection of KEEL_CRASH_AT: after the nth
// committed input that recorded transition kind (app.Transition), the
// process sends itself SIGKILL, as kill -9 would: no deferred cleanup, the
// relay cut off mid-batch, and on the one-transaction-per-record path (a
// timer, a batch that met a poison record) no consumer checkpoint after
// that commit; a batch's inputs commit with their checkpoint. nil when kind
// is "".
func crashHook(kind string, n int, log *slog.Logger) func(string, []proto.Message) {
	if kind == "" {
		return nil
	}
	var seen atomic.Int64
	return func(id string, events []proto.Message) {
		for _, ev := range events {
			if app.Transition(ev) == kind && seen.Add(1) == int64(n) {
				log.Warn("KEEL_CRASH_AT: killing the process", "transition", kind, "n", n, "checkout_id", id)
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
		}
	}
}

// inputTopics are the saga's input topics under the configured prefix.
func (c config) inputTopics() []string {
	var out []string
	for _, t := range app.InputTopics() {
		out = append(out, c.TopicPrefix+t)
	}
	return out
}

// ensureTopics creates what the saga reads (the input topics and their
// dead-letter topics) and what its relay writes (checkout.events and the
// commands topics) if they are missing.
func ensureTopics(ctx context.Context, cfg config) error {
	var specs []topics.Spec
	for _, t := range cfg.inputTopics() {
		specs = append(specs, topics.WithDLQ(t, cfg.Partitions, cfg.Replication)...)
	}
	specs = append(specs, topics.EventSpec(cfg.TopicPrefix+topics.Events("checkout"), cfg.Partitions, cfg.Replication))
	for _, c := range []string{"stock", "orders", "payments", "carts"} {
		specs = append(specs, topics.EventSpec(cfg.TopicPrefix+topics.Commands(c), cfg.Partitions, cfg.Replication))
	}
	return topics.EnsureAt(ctx, cfg.Brokers, specs...)
}
