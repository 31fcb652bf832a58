package idempotency_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/idempotency"
)

// reserve is the test command: its handler decodes, validates and answers
// 201 with a fresh random id, so a second run would be visible.
type reserve struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
	Mode     string `json:"mode,omitempty"` // "", "fail" (503), "panic", "block"
}

func (c reserve) Validate() []httpapi.FieldError {
	var errs httpapi.FieldErrors
	if c.SKU == "" {
		errs.Add("sku", "is required")
	}
	if c.Quantity <= 0 {
		errs.Add("quantity", "must be positive, got %d", c.Quantity)
	}
	return errs
}

type env struct {
	t     *testing.T
	pool  *pgxpool.Pool
	store *idempotency.Store
	url   string
	calls atomic.Int64
	// block, if set, is waited on by requests in mode "block"; entered is
	// signalled when one arrives.
	block   chan struct{}
	entered chan struct{}
	logs    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newEnv(t *testing.T, cfg idempotency.Config) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, pool: testenv.Pool(t), block: make(chan struct{}), entered: make(chan struct{}, 100), logs: &syncBuffer{}}
	if err := idempotency.Migrate(ctx, e.pool); err != nil {
		t.Fatal(err)
	}
	if err := idempotency.Migrate(ctx, e.pool); err != nil { // a second start changes nothing
		t.Fatalf("second Migrate: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(e.logs, nil))
	cfg.Logger = logger
	store, err := idempotency.New(e.pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.store = store
	mux := http.NewServeMux()
	mux.Handle("POST /stock/{sku}/reserve", store.Wrap(http.HandlerFunc(e.handle)))
	srv := httptest.NewServer(httpapi.Wrap(mux, logger, nil))
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

func (e *env) handle(w http.ResponseWriter, r *http.Request) {
	e.calls.Add(1)
	var cmd reserve
	if p := httpapi.Decode(w, r, &cmd); p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	switch cmd.Mode {
	case "fail":
		httpapi.WriteProblem(w, r, &httpapi.Problem{Status: http.StatusServiceUnavailable, Detail: "store unavailable"})
		return
	case "panic":
		panic("handler bug")
	case "block":
		e.entered <- struct{}{}
		<-e.block
	case "slow":
		time.Sleep(100 * time.Millisecond)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	rid := hex.EncodeToString(id[:])
	w.Header().Set("Location", "/reservations/"+rid)
	w.Header().Set("Consistency-Token", "pos-"+rid)
	w.Header().Set("X-Keel-Stream-Version", "7")
	w.Header().Set("X-Debug", "not part of the answer")
	_ = httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"reservation": rid, "sku": r.PathValue("sku"), "quantity": cmd.Quantity})
}

type response struct {
	status int
	header http.Header
	body   string
}

func (e *env) post(key, path, body string) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set(idempotency.Header, key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Error(err)
		return response{}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Error(err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func problemOf(t *testing.T, r response) httpapi.Problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != httpapi.ContentTypeProblem {
		t.Fatalf("Content-Type = %q, want %s (status %d, body %s)", ct, httpapi.ContentTypeProblem, r.status, r.body)
	}
	var p httpapi.Problem
	if err := json.Unmarshal([]byte(r.body), &p); err != nil {
		t.Fatalf("problem %q: %v", r.body, err)
	}
	return p
}

func (e *env) rows() int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM http_idempotency`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

const path = "/stock/SKU-1/reserve"

func TestReplayReturnsFirstAnswer(t *testing.T) {
	e := newEnv(t, idempotency.Config{})
	body := `{"sku":"SKU-1","quantity":2}`
	first := e.post("k-1", path, body)
	if first.status != 201 || first.header.Get(idempotency.HeaderReplayed) != "" {
		t.Fatalf("first = %d %v %s", first.status, first.header, first.body)
	}
	second := e.post("k-1", path, body)
	if second.status != first.status || second.body != first.body {
		t.Errorf("replay = %d %s, want %d %s", second.status, second.body, first.status, first.body)
	}
	for _, h := range []string{"Content-Type", "Location", "Consistency-Token", "X-Keel-Stream-Version"} {
		if second.header.Get(h) != first.header.Get(h) || first.header.Get(h) == "" {
			t.Errorf("replayed %s = %q, want %q", h, second.header.Get(h), first.header.Get(h))
		}
	}
	if second.header.Get(idempotency.HeaderReplayed) != "true" {
		t.Errorf("replay lacks %s: true", idempotency.HeaderReplayed)
	}
	if second.header.Get("X-Debug") != "" {
		t.Error("replay carries X-Debug, a header outside the stored set")
	}
	if second.header.Get(httpapi.HeaderRequestID) == first.header.Get(httpapi.HeaderRequestID) {
		t.Error("replay reuses the first request's X-Request-Id; each response has its own")
	}
	if n := e.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
	// The key is scoped to the path: another path runs.
	if r := e.post("k-1", "/stock/SKU-2/reserve", body); r.status != 201 || r.header.Get(idempotency.HeaderReplayed) != "" {
		t.Errorf("same key on another path = %d replayed=%q, want a fresh 201", r.status, r.header.Get(idempotency.HeaderReplayed))
	}
	// No key: no idempotency, the handler runs every time.
	e.post("", path, body)
	e.post("", path, body)
	if n := e.calls.Load(); n != 4 {
		t.Errorf("handler ran %d times, want 4", n)
	}
}

func TestDifferentBodyIsRefused(t *testing.T) {
	e := newEnv(t, idempotency.Config{})
	e.post("k-2", path, `{"sku":"SKU-1","quantity":2}`)
	r := e.post("k-2", path, `{"sku":"SKU-1","quantity":3}`)
	if r.status != 422 {
		t.Fatalf("reused key with another body = %d %s, want 422", r.status, r.body)
	}
	p := problemOf(t, r)
	if p.Type != httpapi.TypeIdempotencyKeyReused || !strings.Contains(p.Detail, `"k-2"`) || !strings.Contains(p.Detail, "new key") {
		t.Errorf("problem = %+v", p)
	}
	if n := e.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

func TestInFlightIsConflict(t *testing.T) {
	e := newEnv(t, idempotency.Config{RetryAfter: 1500 * time.Millisecond})
	body := `{"sku":"SKU-1","quantity":1,"mode":"block"}`
	firstc := make(chan response, 1)
	go func() { firstc <- e.post("k-3", path, body) }()
	<-e.entered
	r := e.post("k-3", path, body)
	if r.status != 409 || r.header.Get("Retry-After") != "2" {
		t.Fatalf("while in flight = %d Retry-After %q %s, want 409 with Retry-After 2", r.status, r.header.Get("Retry-After"), r.body)
	}
	if p := problemOf(t, r); p.Type != httpapi.TypeIdempotencyKeyInFlight || !strings.Contains(p.Detail, "still in progress") {
		t.Errorf("problem = %+v", p)
	}
	// A different body while in flight is still a misuse of the key.
	if r := e.post("k-3", path, `{"sku":"SKU-1","quantity":9}`); r.status != 422 {
		t.Errorf("different body while in flight = %d, want 422", r.status)
	}
	close(e.block)
	first := <-firstc
	if first.status != 201 {
		t.Fatalf("first = %d %s", first.status, first.body)
	}
	if again := e.post("k-3", path, body); again.status != 201 || again.body != first.body {
		t.Errorf("after completion = %d %s, want the replay of %s", again.status, again.body, first.body)
	}
	if n := e.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

func TestServerErrorIsNotStored(t *testing.T) {
	e := newEnv(t, idempotency.Config{})
	r := e.post("k-4", path, `{"sku":"SKU-1","quantity":1,"mode":"fail"}`)
	if r.status != 503 {
		t.Fatalf("failing handler = %d", r.status)
	}
	if n := e.rows(); n != 0 {
		t.Errorf("%d rows after a 5xx, want 0", n)
	}
	r = e.post("k-4", path, `{"sku":"SKU-1","quantity":1,"mode":"fail"}`)
	if r.status != 503 || r.header.Get(idempotency.HeaderReplayed) != "" {
		t.Errorf("retry after a 5xx = %d replayed=%q, want the handler to run again", r.status, r.header.Get(idempotency.HeaderReplayed))
	}
	if n := e.calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2", n)
	}
}

func TestPanicReleasesKey(t *testing.T) {
	e := newEnv(t, idempotency.Config{})
	body := `{"sku":"SKU-1","quantity":1,"mode":"panic"}`
	r := e.post("k-5", path, body)
	if r.status != 500 {
		t.Fatalf("panicking handler = %d %s", r.status, r.body)
	}
	if p := problemOf(t, r); p.Type != httpapi.TypeInternal || strings.Contains(r.body, "handler bug") {
		t.Errorf("panic problem = %+v (body %s)", p, r.body)
	}
	if n := e.rows(); n != 0 {
		t.Errorf("%d rows after a panic, want 0", n)
	}
	if r := e.post("k-5", path, body); r.status != 500 {
		t.Errorf("retry = %d, want the handler to run (and panic) again", r.status)
	}
	if n := e.calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2", n)
	}
	if !strings.Contains(e.logs.String(), "handler bug") {
		t.Error("the panic was not logged")
	}
}

func TestClientErrorIsStored(t *testing.T) {
	e := newEnv(t, idempotency.Config{})
	body := `{"sku":"","quantity":0}`
	first := e.post("k-6", path, body)
	if first.status != 422 {
		t.Fatalf("invalid command = %d %s", first.status, first.body)
	}
	second := e.post("k-6", path, body)
	if second.status != 422 || second.body != first.body || second.header.Get(idempotency.HeaderReplayed) != "true" {
		t.Errorf("retry of a refused command = %d %s replayed=%q, want the stored 422", second.status, second.body, second.header.Get(idempotency.HeaderReplayed))
	}
	if p := problemOf(t, second); p.Type != httpapi.TypeValidation || len(p.Errors) != 2 {
		t.Errorf("replayed problem = %+v", p)
	}
	if n := e.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

func TestKeyValidation(t *testing.T) {
	e := newEnv(t, idempotency.Config{})
	body := `{"sku":"SKU-1","quantity":1}`
	for _, tc := range []struct {
		name, key, detail string
	}{
		{"too long", strings.Repeat("k", 256), "256 bytes long; the limit is 255"},
		{"non-ASCII", "clé", "non-printable or non-ASCII byte at offset 2"},
	} {
		r := e.post(tc.key, path, body)
		if r.status != 400 {
			t.Errorf("%s: status %d, want 400", tc.name, r.status)
			continue
		}
		if p := problemOf(t, r); p.Type != httpapi.TypeIdempotencyKeyInvalid || !strings.Contains(p.Detail, tc.detail) {
			t.Errorf("%s: problem %+v, want detail containing %q", tc.name, p, tc.detail)
		}
	}
	// An empty header (Go's client drops empty values, so go below it).
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header[idempotency.Header] = []string{""}
	e.store.Wrap(http.HandlerFunc(e.handle)).ServeHTTP(rec, req)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "header is empty") {
		t.Errorf("empty key = %d %s, want 400", rec.Code, rec.Body)
	}
	if r := e.post(strings.Repeat("k", 255), path, body); r.status != 201 {
		t.Errorf("255-byte key = %d %s, want 201", r.status, r.body)
	}
	if n := e.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1 (only the valid key)", n)
	}
}

// TestKeyPattern: the documented KeyPattern and the key check agree,
// key by key, on the edges of the rule.
func TestKeyPattern(t *testing.T) {
	e := newEnv(t, idempotency.Config{})
	re := regexp.MustCompile(idempotency.KeyPattern)
	for _, key := range []string{"", "k", "a b", " k", "k ", " ", "~!", "k\x7f", "k\tk", "clé", "\x00",
		strings.Repeat("k", 254), strings.Repeat("k", 255), strings.Repeat("k", 256)} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(`{"sku":"SKU-1","quantity":1}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header[idempotency.Header] = []string{key} // as sent, below any client's trimming
		e.store.Wrap(http.HandlerFunc(e.handle)).ServeHTTP(rec, req)
		refused := rec.Code == 400 && strings.Contains(rec.Body.String(), httpapi.TypeIdempotencyKeyInvalid)
		if matches := re.MatchString(key); matches == refused {
			t.Errorf("key %q: pattern matches %t, server answered %d %s", key, matches, rec.Code, rec.Body)
		}
	}
}

func TestRequiredKey(t *testing.T) {
	e := newEnv(t, idempotency.Config{Required: true})
	r := e.post("", path, `{"sku":"SKU-1","quantity":1}`)
	if r.status != 400 || problemOf(t, r).Type != httpapi.TypeIdempotencyKeyRequired {
		t.Errorf("missing required key = %d %s", r.status, r.body)
	}
	if n := e.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times, want 0", n)
	}
}

func TestOversizedBody(t *testing.T) {
	e := newEnv(t, idempotency.Config{MaxBody: 64})
	r := e.post("k-7", path, `{"sku":"`+strings.Repeat("x", 100)+`","quantity":1}`)
	if r.status != 413 || problemOf(t, r).Type != httpapi.TypeTooLarge {
		t.Errorf("oversized = %d %s", r.status, r.body)
	}
	if n := e.rows(); n != 0 || e.calls.Load() != 0 {
		t.Errorf("%d rows, %d calls after a 413, want none", n, e.calls.Load())
	}
}

func TestExpiry(t *testing.T) {
	e := newEnv(t, idempotency.Config{})
	ctx := context.Background()
	e.post("old", path, `{"sku":"SKU-1","quantity":1}`)
	e.post("new", path, `{"sku":"SKU-1","quantity":1}`)
	if _, err := e.pool.Exec(ctx, `UPDATE http_idempotency SET created_at = now() - interval '25 hours' WHERE key = 'old'`); err != nil {
		t.Fatal(err)
	}
	// An expired key is forgotten even before the purge: reusing it with
	// another body runs the command.
	if r := e.post("old", path, `{"sku":"SKU-1","quantity":5}`); r.status != 201 || r.header.Get(idempotency.HeaderReplayed) != "" {
		t.Errorf("expired key reused = %d %s, want a fresh 201", r.status, r.body)
	}
	if _, err := e.pool.Exec(ctx, `UPDATE http_idempotency SET created_at = now() - interval '25 hours' WHERE key = 'old'`); err != nil {
		t.Fatal(err)
	}
	n, err := e.store.PurgeExpired(ctx)
	if err != nil || n != 1 {
		t.Fatalf("PurgeExpired = %d, %v; want 1", n, err)
	}
	if rows := e.rows(); rows != 1 {
		t.Errorf("%d rows after purge, want 1 (the fresh key)", rows)
	}
	if r := e.post("new", path, `{"sku":"SKU-1","quantity":1}`); r.header.Get(idempotency.HeaderReplayed) != "true" {
		t.Error("a fresh key was forgotten")
	}
}

// TestAbandonedClaimIsTakenOver: a claim whose lease ran out (its process
// died) is taken over by the same request; the old owner's late outcome
// is then not stored over the new one.
func TestAbandonedClaimIsTakenOver(t *testing.T) {
	e := newEnv(t, idempotency.Config{LeaseTimeout: time.Minute})
	body := `{"sku":"SKU-1","quantity":1,"mode":"block"}`
	firstc := make(chan response, 1)
	go func() { firstc <- e.post("k-8", path, body) }()
	<-e.entered
	if _, err := e.pool.Exec(context.Background(), `UPDATE http_idempotency SET created_at = created_at - interval '2 minutes'`); err != nil {
		t.Fatal(err)
	}
	if r := e.post("k-8", path, `{"sku":"SKU-1","quantity":2,"mode":"block"}`); r.status != 422 {
		t.Errorf("another body on an abandoned claim = %d, want 422", r.status)
	}
	secondc := make(chan response, 1)
	go func() { secondc <- e.post("k-8", path, body) }()
	<-e.entered // the takeover runs the handler
	close(e.block)
	first, second := <-firstc, <-secondc
	if first.status != 201 || second.status != 201 {
		t.Fatalf("statuses %d, %d", first.status, second.status)
	}
	third := e.post("k-8", path, body)
	if third.body != second.body {
		t.Errorf("replay = %s, want the new owner's answer %s", third.body, second.body)
	}
	if !strings.Contains(e.logs.String(), "claim was taken over") {
		t.Errorf("the old owner's lost claim was not logged: %s", e.logs.String())
	}
}

// TestConcurrentSameKey: 20 identical requests at once run the handler
// exactly once; every other gets the replay or a 409.
func TestConcurrentSameKey(t *testing.T) {
	e := newEnv(t, idempotency.Config{})
	body := `{"sku":"SKU-1","quantity":1,"mode":"slow"}`
	const n = 20
	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make([]response, n)
	for i := range n {
		wg.Go(func() {
			<-start
			results[i] = e.post("race", path, body)
		})
	}
	close(start)
	wg.Wait()
	if c := e.calls.Load(); c != 1 {
		t.Fatalf("handler ran %d times, want exactly 1", c)
	}
	var fresh, replays, conflicts int
	var original string
	for _, r := range results {
		switch {
		case r.status == 201 && r.header.Get(idempotency.HeaderReplayed) == "":
			fresh++
			original = r.body
		case r.status == 201:
			replays++
		case r.status == 409:
			conflicts++
		default:
			t.Errorf("unexpected response %d %s", r.status, r.body)
		}
	}
	if fresh != 1 || fresh+replays+conflicts != n {
		t.Errorf("fresh %d, replays %d, conflicts %d; want 1 fresh and the rest replays or conflicts", fresh, replays, conflicts)
	}
	for _, r := range results {
		if r.status == 201 && r.body != original {
			t.Errorf("replay %s differs from the original %s", r.body, original)
		}
	}
	t.Logf("1 fresh, %d replays, %d conflicts", replays, conflicts)
}

func TestConfigValidation(t *testing.T) {
	pool := testenv.Pool(t)
	if _, err := idempotency.New(pool, idempotency.Config{TTL: time.Minute, LeaseTimeout: time.Hour}); err == nil {
		t.Error("LeaseTimeout longer than TTL accepted")
	}
	if _, err := idempotency.New(nil, idempotency.Config{}); err == nil {
		t.Error("nil pool accepted")
	}
}

// Issue 9, defect 12: with the key store's database down, a command is
// neither run nor refused for good: 503 unavailable with Retry-After
// (was a 500 without it), and a retry with the same key once the database
// is back runs it.
func TestDatabaseDownIsUnavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // connections to addr are refused: PostgreSQL is down
	down, err := pgxpool.New(context.Background(), "postgres://keel:keel@"+addr+"/keel?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(down.Close)
	store, err := idempotency.New(down, idempotency.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	mux := http.NewServeMux()
	mux.Handle("POST /stock/{sku}/reserve", store.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusCreated)
	})))
	srv := httptest.NewServer(httpapi.Wrap(mux, slog.New(slog.DiscardHandler), nil))
	t.Cleanup(srv.Close)
	e := &env{t: t, url: srv.URL}
	r := e.post("k-down", path, `{"sku":"SKU-1","quantity":1}`)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("database down: %d Retry-After=%q %s, want 503 with Retry-After", r.status, r.header.Get("Retry-After"), r.body)
	}
	if p := problemOf(t, r); p.Type != httpapi.TypeUnavailable {
		t.Errorf("problem type %q, want %s", p.Type, httpapi.TypeUnavailable)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("handler ran %d times with the key store down, want 0", n)
	}
}
