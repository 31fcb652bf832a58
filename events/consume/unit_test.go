package consume

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestConfigValidate(t *testing.T) {
	good := func() Config {
		return Config{Brokers: []string{"b:9092"}, Group: "g", Topics: []string{"t"}, Pool: &pgxpool.Pool{}}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		wants string // "" means valid
	}{
		{"minimal", func(*Config) {}, ""},
		{"no brokers", func(c *Config) { c.Brokers = nil }, "no brokers"},
		{"no group", func(c *Config) { c.Group = " " }, "no group"},
		{"no topics", func(c *Config) { c.Topics = nil }, "no topics"},
		{"twice", func(c *Config) { c.Topics = []string{"t", "t"} }, "listed twice"},
		{"no pool", func(c *Config) { c.Pool = nil }, "no database pool"},
		{"attempts", func(c *Config) { c.Retry.MaxAttempts = -1 }, "max attempts"},
		{"backoffs", func(c *Config) { c.Retry = RetryPolicy{InitialBackoff: time.Second, MaxBackoff: time.Millisecond} }, "initial backoff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.edit(&c)
			err := c.Validate()
			if (err == nil) != (tc.wants == "") || (err != nil && !strings.Contains(err.Error(), tc.wants)) {
				t.Errorf("Validate() = %v, want %q", err, tc.wants)
			}
			if tc.wants == "" {
				if _, err := New(c, HandlerFunc(nil)); err != nil {
					t.Errorf("New: %v", err)
				}
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	p := RetryPolicy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 7: 5 * time.Second, 100: 5 * time.Second} {
		for range 50 {
			if d := p.backoff(n); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %s, want in [%s, %s]", n, d, want/2, want)
			}
		}
	}
}

func TestErrorKinds(t *testing.T) {
	for _, tc := range []struct {
		err              error
		infra, permanent bool
	}{
		{errors.New("bad payload"), false, false},
		{Permanent(errors.New("bad")), false, true},
		{fmt.Errorf("wrapped: %w", Transient(errors.New("down"))), true, false},
		{context.Canceled, true, false},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), true, false},
		{&pgconn.PgError{Code: "40001"}, true, false},
		{&pgconn.PgError{Code: "57P01"}, true, false},
		{&pgconn.PgError{Code: "23505"}, false, false}, // unique violation: the record's fault
		{nil, false, false},
	} {
		if got := isInfra(tc.err); got != tc.infra {
			t.Errorf("isInfra(%v) = %v, want %v", tc.err, got, tc.infra)
		}
		if got := IsPermanent(tc.err); got != tc.permanent {
			t.Errorf("IsPermanent(%v) = %v, want %v", tc.err, got, tc.permanent)
		}
	}
	if Permanent(nil) != nil || Transient(nil) != nil {
		t.Error("Permanent(nil) or Transient(nil) is not nil")
	}
	if _, err := DecodeEvent(&kgo.Record{Value: []byte("x")}); !IsPermanent(err) {
		t.Errorf("DecodeEvent of a non-event: %v, want a Permanent error", err)
	}
}

func TestDLQRecordTruncatesError(t *testing.T) {
	r := &kgo.Record{Topic: "t", Partition: 2, Offset: 9, Key: []byte("k"), Value: []byte("v"),
		Headers: []kgo.RecordHeader{{Key: "ce_id", Value: []byte("1")}}}
	d := dlqRecord(r, "t.dlq", "g", errors.New(strings.Repeat("x", 10000)), 5, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if d.Topic != "t.dlq" || len(d.Headers) != 8 {
		t.Fatalf("dead letter %s with %d headers", d.Topic, len(d.Headers))
	}
	if v, _ := header(d, HeaderDLQError); len(v) != maxDLQErrorLen {
		t.Errorf("dlq-error has %d bytes, want %d", len(v), maxDLQErrorLen)
	}
	if v, _ := header(d, HeaderDLQTime); v != "2026-01-02T03:04:05Z" {
		t.Errorf("dlq-time %q", v)
	}
}
