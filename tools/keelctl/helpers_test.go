package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// These tests run against the local stack (`make up`): a missing stack
// fails them. Every test makes its own databases and topics and drops them.

func testPGURL() string {
	if u := os.Getenv("KEEL_PG_URL"); u != "" {
		return u
	}
	return "postgres://keel:keel@127.0.0.1:5432/postgres"
}

func testBrokers() []string {
	if b := os.Getenv("KEEL_KAFKA_BROKERS"); b != "" {
		return strings.Split(b, ",")
	}
	return []string{"127.0.0.1:9092"}
}

func uniq(prefix string) string {
	return prefix + strings.ToLower(ksuid.New().String()[:12])
}

// freshDB creates a database, dropped when the test ends, and returns its URL.
func freshDB(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, testPGURL())
	if err != nil {
		t.Fatalf("PostgreSQL not reachable (run `make up`): %v", err)
	}
	defer admin.Close(ctx)
	name := uniq("keelctl_test_")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, testPGURL())
		if err != nil {
			t.Logf("drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(testPGURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

func testAdmin(t *testing.T) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(testBrokers()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// deleteTopicsAtEnd deletes the named topics when the test ends.
func deleteTopicsAtEnd(t *testing.T, names ...string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cl, err := kgo.NewClient(kgo.SeedBrokers(testBrokers()...))
		if err != nil {
			return
		}
		defer cl.Close()
		if _, err := kadm.NewClient(cl).DeleteTopics(ctx, names...); err != nil {
			t.Logf("delete topics %v: %v", names, err)
		}
	})
}

// freshTopics creates topics with partitions each, deleted at the end.
func freshTopics(t *testing.T, partitions int32, names ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := testAdmin(t)
	resp, err := adm.CreateTopics(ctx, partitions, 1, nil, names...)
	if err == nil {
		err = resp.Error()
	}
	if err == nil {
		err = topics.WaitReady(ctx, adm, names...)
	}
	if err != nil {
		t.Fatalf("create topics %v (run `make up`): %v", names, err)
	}
	deleteTopicsAtEnd(t, names...)
}

// result is one keelctl run.
type result struct {
	code        int
	out, errOut string
}

// keelctl runs a command line in-process with the test stack's environment
// plus extra (KEY=VALUE).
func keelctl(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string {
		switch k {
		case "KEEL_PG_URL":
			return testPGURL()
		case "KEEL_KAFKA_BROKERS":
			return strings.Join(testBrokers(), ",")
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := runEnv(ctx, args, &out, &errOut, getenv)
	t.Logf("keelctl %s → %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return result{code, out.String(), errOut.String()}
}

// must runs keelctl and fails the test unless it exits with want.
func mustCode(t *testing.T, want int, args ...string) result {
	t.Helper()
	r := keelctl(t, args...)
	if r.code != want {
		t.Fatalf("keelctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, want, r.out, r.errOut)
	}
	return r
}

// jsonLines parses JSON lines into maps.
func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// endOffset is the sum of topic's partitions' end offsets.
func endOffset(t *testing.T, adm *kadm.Client, topic string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// waitEnd waits until topic holds at least n records.
func waitEnd(t *testing.T, adm *kadm.Client, topic string, n int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for endOffset(t, adm, topic) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: fewer than %d records after 60s", topic, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
