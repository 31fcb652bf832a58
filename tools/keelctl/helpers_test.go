package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/keel-commerce/keel/events/testenv"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
)

// These tests run against the local stack (`make up`): a missing stack
// fails them. Every test makes its own databases and topics and drops them.

func testPGURL() string { return testenv.PostgresURL() }

func testBrokers() []string { return testenv.KafkaBrokers() }

func uniq(prefix string) string {
	return prefix + strings.ToLower(ksuid.New().String()[:12])
}

// freshDB creates a database, dropped when the test ends, and returns its URL.
func freshDB(t *testing.T) string { return testenv.DatabaseURL(t) }

// deleteTopicsAtEnd deletes the named topics when the test ends.
func deleteTopicsAtEnd(t *testing.T, names ...string) { testenv.DeleteTopicsAtEnd(t, names...) }

// freshTopics creates topics with partitions each, deleted at the end.
func freshTopics(t *testing.T, partitions int32, names ...string) {
	t.Helper()
	testenv.CreateTopics(t, partitions, names...)
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
