// Package pgtest gives the kit's integration tests a fresh PostgreSQL
// database each, dropped when the test ends. It mirrors the events module's
// internal testenv (KEEL_PG_URL or the local stack's default); a missing
// server fails the test, since a skipped integration test is not a pass.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// URL is the server the tests use: KEEL_PG_URL, or the local stack's
// default. Its database part is ignored; each test gets its own.
func URL() string {
	if u := os.Getenv("KEEL_PG_URL"); u != "" {
		return u
	}
	return "postgres://keel:keel@127.0.0.1:5432/postgres"
}

// Pool creates a fresh database, opens a pool on it and returns the pool;
// both are closed and dropped when the test ends.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, URL())
	if err != nil {
		t.Fatalf("pgtest: PostgreSQL at %s is not reachable (run `make up`): %v", redact(URL()), err)
	}
	defer admin.Close(ctx)
	var b [7]byte
	_, _ = rand.Read(b[:])
	name := "keel_test_kit_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, URL())
		if err != nil {
			t.Errorf("pgtest: drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(URL())
	if err != nil {
		t.Fatalf("pgtest: parse KEEL_PG_URL: %v", err)
	}
	u.Path = "/" + name
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		t.Fatalf("pgtest: open pool on %s: %v", name, err)
	}
	t.Cleanup(pool.Close) // runs before the drop (cleanups run last-in first-out)
	return pool
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
