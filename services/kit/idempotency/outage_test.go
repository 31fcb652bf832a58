package idempotency_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/idempotency"
)

// cutProxy forwards TCP connections to a PostgreSQL server until cut:
// then it drops every open connection and refuses new ones, as a server
// that went down would, until restored.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *cutProxy) serve(c net.Conn) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		return
	}
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns[c], p.conns[s] = true, true
	p.mu.Unlock()
	go func() { _, _ = io.Copy(s, c); s.Close() }()
	_, _ = io.Copy(c, s)
	c.Close()
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// The database goes away while a command runs: its claim on the key cannot
// be released then. Once the database is back, a retry with the same key
// must run the command (its first attempt answered 503), not get 409
// in-flight until the lease ends (2 minutes).
func TestClaimReleasedAfterOutage(t *testing.T) {
	dsn := testenv.DatabaseURL(t)
	direct, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(direct.Close)
	if err := idempotency.Migrate(context.Background(), direct); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	pool, err := pgxpool.New(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store, err := idempotency.New(pool, idempotency.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var first atomic.Bool
	first.Store(true)
	mux := http.NewServeMux()
	mux.Handle("POST /stock/{sku}/reserve", store.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if first.CompareAndSwap(true, false) { // the database goes down mid-command
			proxy.cut()
			httpapi.WriteProblem(w, r, httpapi.Unexpected(&net.OpError{Op: "read", Net: "tcp", Err: io.ErrUnexpectedEOF}))
			return
		}
		w.WriteHeader(http.StatusCreated)
	})))
	srv := httptest.NewServer(httpapi.Wrap(mux, slog.New(slog.DiscardHandler), nil))
	t.Cleanup(srv.Close)
	e := &env{t: t, url: srv.URL}
	body := `{"sku":"SKU-1","quantity":1}`
	if r := e.post("k-outage", path, body); r.status != http.StatusServiceUnavailable {
		t.Fatalf("first attempt: %d %s, want 503", r.status, r.body)
	}
	time.Sleep(500 * time.Millisecond)
	proxy.restore()
	var r response
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if r = e.post("k-outage", path, body); r.status == http.StatusCreated {
			return
		}
	}
	t.Fatalf("retry 10 s after the database came back: %d %s, want 201", r.status, r.body)
}
