package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func pgURL() string {
	if u := os.Getenv("KEEL_PG_URL"); u != "" {
		return u
	}
	return "postgres://keel:keel@127.0.0.1:5432/postgres"
}

func kafkaBrokers() []string {
	if b := os.Getenv("KEEL_KAFKA_BROKERS"); b != "" {
		return strings.Split(b, ",")
	}
	return []string{"127.0.0.1:9092"}
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func randomSuffix() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freshDB creates keel_bench_<random> on the server at KEEL_PG_URL and
// returns a pool on it (MaxConns maxConns, all connections opened up front)
// and a function that closes the pool and drops the database.
func freshDB(ctx context.Context, maxConns int32) (*pgxpool.Pool, func(), error) {
	admin, err := pgx.Connect(ctx, pgURL())
	if err != nil {
		return nil, nil, fmt.Errorf("PostgreSQL at %s is not reachable (run `make up`): %w", redact(pgURL()), err)
	}
	defer admin.Close(context.Background())
	name := "keel_bench_" + randomSuffix()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, nil, fmt.Errorf("create database %s: %w", name, err)
	}
	drop := func() { dropDB(name) }
	u, err := url.Parse(pgURL())
	if err != nil {
		drop()
		return nil, nil, err
	}
	u.Path = "/" + name
	cfg, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		drop()
		return nil, nil, err
	}
	cfg.MaxConns = maxConns
	cfg.MinConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		drop()
		return nil, nil, err
	}
	// Open every connection now, so no benchmark pays for connecting.
	conns := make([]*pgxpool.Conn, 0, maxConns)
	for range maxConns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
	return pool, func() { pool.Close(); drop() }, nil
}

// dropDB drops a bench database. A plain DROP DATABASE first: it makes an
// autovacuum worker in the database exit, which WITH (FORCE) cannot do for a
// non-superuser on PostgreSQL 15 ("must be a member of the role whose
// process is being terminated"); FORCE then ends our own late backends.
func dropDB(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, pgURL())
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: drop %s: %v\n", name, err)
		return
	}
	defer c.Close(context.Background())
	for attempt := 0; ; attempt++ {
		sql := "DROP DATABASE IF EXISTS " + name
		if attempt%2 == 1 {
			sql += " WITH (FORCE)"
		}
		_, err = c.Exec(ctx, sql)
		if err == nil {
			return
		}
		if attempt == 9 || ctx.Err() != nil {
			fmt.Fprintf(os.Stderr, "bench: drop %s: %v\n", name, err)
			return
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
}

// serverSettings reads the durability settings every figure depends on.
func serverSettings(ctx context.Context) (string, error) {
	c, err := pgx.Connect(ctx, pgURL())
	if err != nil {
		return "", fmt.Errorf("PostgreSQL at %s is not reachable (run `make up`): %w", redact(pgURL()), err)
	}
	defer c.Close(context.Background())
	var parts []string
	for _, s := range []string{"server_version", "synchronous_commit", "fsync", "wal_sync_method", "full_page_writes", "commit_delay", "wal_buffers", "shared_buffers", "max_connections"} {
		var v string
		if err := c.QueryRow(ctx, "SELECT current_setting($1)", s).Scan(&v); err != nil {
			return "", err
		}
		parts = append(parts, s+"="+v)
	}
	return strings.Join(parts, " "), nil
}

// freshTopic creates a topic with partitions partitions (replication 1)
// and returns a function that deletes it.
func freshTopic(ctx context.Context, prefix string, partitions int32) (string, func(), error) {
	name := prefix + "-" + randomSuffix()
	del, err := createTopic(ctx, name, partitions)
	return name, del, err
}

// createTopic creates a topic of that exact name (replication 1; a fresh
// topic's dead-letter topic, say) and returns a function that deletes it.
func createTopic(ctx context.Context, name string, partitions int32) (func(), error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkaBrokers()...))
	if err != nil {
		return nil, err
	}
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopics(ctx, partitions, 1, nil, name)
	if err == nil {
		err = resp.Error()
	}
	if err == nil {
		err = topics.WaitReady(ctx, adm, name)
	}
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("create topic %s on %v (run `make up`): %w", name, kafkaBrokers(), err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := adm.DeleteTopics(ctx, name); err != nil {
			fmt.Fprintf(os.Stderr, "bench: delete topic %s: %v\n", name, err)
		}
		cl.Close()
	}, nil
}
