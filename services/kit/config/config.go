// Package config reads the environment variables the service binaries
// (services/*/cmd) share: where PostgreSQL and Kafka are, and how the
// command topics are sized. Each binary documents its own variables and
// reads its own ones; these helpers keep the shared names, defaults and
// error messages the same everywhere.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// DefaultPostgresURL is KEEL_PG_URL's default: the local stack's server.
const DefaultPostgresURL = "postgres://keel:keel@127.0.0.1:5432/postgres"

// Env is the variable k, or def when it is unset or empty.
func Env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// List splits a comma-separated value, dropping blanks around and empty
// entries.
func List(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// DatabaseURL is the variable urlVar (KEEL_DATABASE_URL, say), or
// KEEL_PG_URL's server (default DefaultPostgresURL) with database name.
func DatabaseURL(urlVar, name string) (string, error) {
	if u := os.Getenv(urlVar); u != "" {
		return u, nil
	}
	u, err := url.Parse(Env("KEEL_PG_URL", DefaultPostgresURL))
	if err != nil {
		return "", fmt.Errorf("KEEL_PG_URL: %w", err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// Kafka reads KEEL_KAFKA_BROKERS (comma-separated, default 127.0.0.1:9092)
// and the size of topics the binary creates, KEEL_TOPIC_PARTITIONS
// (default 6) and KEEL_TOPIC_REPLICATION (default 1). It appends an error
// for each bad value to errs.
func Kafka(errs *[]error) (brokers []string, partitions int32, replication int16) {
	brokers = List(Env("KEEL_KAFKA_BROKERS", "127.0.0.1:9092"))
	if len(brokers) == 0 {
		*errs = append(*errs, errors.New("KEEL_KAFKA_BROKERS: no brokers"))
	}
	p, err := strconv.ParseInt(Env("KEEL_TOPIC_PARTITIONS", "6"), 10, 32)
	if err != nil || p < 1 {
		*errs = append(*errs, errors.New("KEEL_TOPIC_PARTITIONS: want a positive number"))
	}
	r, err := strconv.ParseInt(Env("KEEL_TOPIC_REPLICATION", "1"), 10, 16)
	if err != nil || r < 1 {
		*errs = append(*errs, errors.New("KEEL_TOPIC_REPLICATION: want a positive number"))
	}
	return brokers, int32(p), int16(r)
}

// Redact is a database URL fit for logs: its password masked, or
// "(unparsable)".
func Redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}
