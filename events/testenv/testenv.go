// Package testenv gives integration tests, in any Keel module, their own
// throw-away resources on the local stack: a fresh PostgreSQL database and
// fresh Kafka topics per test, dropped when the test ends. Addresses come from the same environment
// variables the binaries read, so the tests run against any stack.
//
// A missing stack fails the test: a skipped integration test is not a pass.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/keel-commerce/keel/events/consistency"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// PostgresURL is the server the tests use: KEEL_PG_URL, or the local stack's
// default. Its database part is ignored; each test gets its own.
func PostgresURL() string {
	if u := os.Getenv("KEEL_PG_URL"); u != "" {
		return u
	}
	return "postgres://keel:keel@127.0.0.1:5432/postgres"
}

// KafkaBrokers is KEEL_KAFKA_BROKERS (comma-separated), or 127.0.0.1:9092.
func KafkaBrokers() []string {
	if b := os.Getenv("KEEL_KAFKA_BROKERS"); b != "" {
		return strings.Split(b, ",")
	}
	return []string{"127.0.0.1:9092"}
}

// Name returns a short unique lower-case name with prefix, for databases
// and topics.
func Name(prefix string) string {
	return prefix + "_" + strings.ToLower(ksuid.New().String()[:14])
}

// DatabaseURL creates a fresh database and returns its URL; the database is
// dropped when the test ends.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, PostgresURL())
	if err != nil {
		t.Fatalf("testenv: PostgreSQL at %s is not reachable (run `make up`): %v", redact(PostgresURL()), err)
	}
	defer admin.Close(ctx)
	name := Name("keel_test")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, PostgresURL())
		if err != nil {
			t.Errorf("testenv: drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		// FORCE cannot end an autovacuum worker for a non-superuser, and
		// the drop fails while one runs in the database: retry briefly.
		for attempt := 0; ; attempt++ {
			_, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			if err == nil {
				return
			}
			if attempt == 20 || ctx.Err() != nil {
				t.Errorf("testenv: drop %s: %v", name, err)
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	})
	u, err := url.Parse(PostgresURL())
	if err != nil {
		t.Fatalf("testenv: parse KEEL_PG_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Pool opens a pool of up to 32 connections (enough for the race tests'
// concurrent writers) on a fresh database (see DatabaseURL), closed when
// the test ends.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(DatabaseURL(t))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cfg.MaxConns = 32
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("testenv: open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Topic creates a fresh topic with the given partitions on the local
// broker and deletes it when the test ends. It returns the topic's name.
func Topic(t testing.TB, partitions int32) string {
	t.Helper()
	name := strings.ReplaceAll(Name("test"), "_", "-")
	CreateTopics(t, partitions, name)
	return name
}

// CreateTopics creates the named topics (deleted when the test ends).
func CreateTopics(t testing.TB, partitions int32, names ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := Admin(t)
	resp, err := adm.CreateTopics(ctx, partitions, 1, nil, names...)
	if err == nil {
		err = resp.Error()
	}
	if err == nil {
		err = topics.WaitReady(ctx, adm, names...)
	}
	if err != nil {
		t.Fatalf("testenv: create topics %v on %v (run `make up`): %v", names, KafkaBrokers(), err)
	}
	DeleteTopicsAtEnd(t, names...)
}

// DeleteTopicsAtEnd deletes the named topics when the test ends: those a
// test's code creates itself (a tool's `topics ensure`, a process's start)
// as well as CreateTopics's. It uses a client of its own, so it does not
// depend on a client the test has closed by then.
func DeleteTopicsAtEnd(t testing.TB, names ...string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cl, err := kgo.NewClient(kgo.SeedBrokers(KafkaBrokers()...))
		if err != nil {
			t.Logf("testenv: delete topics %v: %v", names, err)
			return
		}
		defer cl.Close()
		resp, err := kadm.NewClient(cl).DeleteTopics(ctx, names...)
		if err == nil {
			for _, r := range resp {
				if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
					err = errors.Join(err, fmt.Errorf("%s: %w", r.Topic, r.Err))
				}
			}
		}
		if err != nil {
			t.Errorf("testenv: delete topics %v: %v", names, err)
		}
	})
}

// Admin returns an admin client on the local broker, closed when the test ends.
func Admin(t testing.TB) *kadm.Client {
	t.Helper()
	cl := Client(t)
	return kadm.NewClient(cl)
}

// Client returns a plain Kafka client on the local broker with opts added,
// closed when the test ends.
func Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(KafkaBrokers()...)}, opts...)...)
	if err != nil {
		t.Fatalf("testenv: kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// Must fails the test on err.
func Must(t testing.TB, err error, what string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
	}
}

// DeadLetters reads topic's dead-letter topic (topic+".dlq") from the start
// until it holds want records or a minute passes, and fails the test unless
// exactly want arrived.
func DeadLetters(t testing.TB, topic string, want int) []*kgo.Record {
	t.Helper()
	cl := Client(t, kgo.ConsumeTopics(topic+".dlq"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond))
	var dead []*kgo.Record
	for deadline := time.Now().Add(time.Minute); len(dead) < want && time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { dead = append(dead, r) })
	}
	if len(dead) != want {
		t.Fatalf("testenv: %d dead letters on %s.dlq, want %d", len(dead), topic, want)
	}
	return dead
}

// WaitCheckpoints waits (a minute at most) until the consumer checkpoints
// of topic in pool (events/consume's table) sum to total: every record of a
// fresh topic, starting at offset 0 in each partition, is handled.
func WaitCheckpoints(t testing.TB, pool *pgxpool.Pool, topic string, total int64) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; {
		var next int64
		if err := pool.QueryRow(context.Background(),
			`SELECT coalesce(sum(next_offset), 0) FROM consumer_checkpoints WHERE topic = $1`, topic).Scan(&next); err != nil {
			t.Fatalf("testenv: read checkpoints: %v", err)
		}
		if next == total {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: checkpoints of %s at %d of %d records", topic, next, total)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ConsistencyToken fails the test unless h carries a consistency token
// (events/consistency.Header) of context that names exactly the streams of
// want at their versions. It returns the header's value.
func ConsistencyToken(t testing.TB, h http.Header, context string, want map[string]int64) string {
	t.Helper()
	s := h.Get(consistency.Header)
	tok, err := consistency.Parse(s)
	if err != nil {
		t.Fatalf("testenv: %s %q: %v", consistency.Header, s, err)
	}
	if tok.Context != context || !maps.Equal(tok.Streams, want) {
		t.Fatalf("testenv: %s names %s %v, want %s %v", consistency.Header, tok.Context, tok.Streams, context, want)
	}
	return s
}
