package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestDatabaseURL(t *testing.T) {
	t.Setenv("KEEL_DATABASE_URL", "")
	t.Setenv("KEEL_PG_URL", "")
	if u, err := DatabaseURL("KEEL_DATABASE_URL", "keel_x"); err != nil || u != "postgres://keel:keel@127.0.0.1:5432/keel_x" {
		t.Errorf("default = %q, %v", u, err)
	}
	t.Setenv("KEEL_PG_URL", "postgres://u:s3cret@db:5433/postgres?sslmode=disable")
	u, err := DatabaseURL("KEEL_DATABASE_URL", "keel_x")
	if err != nil || u != "postgres://u:s3cret@db:5433/keel_x?sslmode=disable" {
		t.Errorf("from KEEL_PG_URL = %q, %v", u, err)
	}
	if r := Redact(u); strings.Contains(r, "s3cret") || !strings.Contains(r, "db:5433/keel_x") {
		t.Errorf("Redact = %q", r)
	}
	t.Setenv("KEEL_DATABASE_URL", "postgres://other/db")
	if u, err := DatabaseURL("KEEL_DATABASE_URL", "keel_x"); err != nil || u != "postgres://other/db" {
		t.Errorf("KEEL_DATABASE_URL = %q, %v", u, err)
	}
	t.Setenv("KEEL_DATABASE_URL", "")
	t.Setenv("KEEL_PG_URL", "postgres://%zz")
	if _, err := DatabaseURL("KEEL_DATABASE_URL", "keel_x"); err == nil || !strings.HasPrefix(err.Error(), "KEEL_PG_URL: ") {
		t.Errorf("bad KEEL_PG_URL: %v", err)
	}
	if r := Redact("postgres://%zz"); r != "(unparsable)" {
		t.Errorf("Redact = %q", r)
	}
}

func TestKafka(t *testing.T) {
	for _, k := range []string{"KEEL_KAFKA_BROKERS", "KEEL_TOPIC_PARTITIONS", "KEEL_TOPIC_REPLICATION"} {
		t.Setenv(k, "")
	}
	var errs []error
	b, p, r := Kafka(&errs)
	if fmt.Sprint(b, p, r) != "[127.0.0.1:9092] 6 1" || errs != nil {
		t.Errorf("defaults = %v %d %d, %v", b, p, r, errs)
	}
	t.Setenv("KEEL_KAFKA_BROKERS", " a:1, ,b:2 ")
	t.Setenv("KEEL_TOPIC_PARTITIONS", "12")
	t.Setenv("KEEL_TOPIC_REPLICATION", "3")
	b, p, r = Kafka(&errs)
	if fmt.Sprint(b, p, r) != "[a:1 b:2] 12 3" || errs != nil {
		t.Errorf("set = %v %d %d, %v", b, p, r, errs)
	}
	t.Setenv("KEEL_KAFKA_BROKERS", " , ")
	t.Setenv("KEEL_TOPIC_PARTITIONS", "0")
	t.Setenv("KEEL_TOPIC_REPLICATION", "x")
	Kafka(&errs)
	want := "KEEL_KAFKA_BROKERS: no brokers\nKEEL_TOPIC_PARTITIONS: want a positive number\nKEEL_TOPIC_REPLICATION: want a positive number"
	if err := errors.Join(errs...); err == nil || err.Error() != want {
		t.Errorf("errors = %v, want %q", err, want)
	}
}

func TestEnv(t *testing.T) {
	t.Setenv("KEEL_X", "")
	if v := Env("KEEL_X", "def"); v != "def" {
		t.Errorf("empty: %q", v)
	}
	t.Setenv("KEEL_X", "v")
	if v := Env("KEEL_X", "def"); v != "v" {
		t.Errorf("set: %q", v)
	}
}
