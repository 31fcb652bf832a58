// Package idempotency makes HTTP command endpoints safe to retry with an
// Idempotency-Key header (DESIGN invariant 2): the first request with a key
// runs; a repeat of the same request gets the first answer replayed,
// byte for byte, without running the handler again. State lives in
// PostgreSQL (table http_idempotency, created by Migrate), so every replica
// of a service shares it.
//
// For a key, scoped to (method, path):
//
//   - same request (method, path, query and body hash) after the first
//     finished: the stored status, headers and body, plus
//     Idempotent-Replayed: true;
//   - a different request: 422 idempotency-key-reused;
//   - the first is still running: 409 idempotency-key-in-flight with
//     Retry-After;
//   - the first ended in a 5xx or a panic: nothing is kept, the next
//     request runs afresh (a failure may be transient; if the database
//     was down, the claim is released as soon as it is back);
//   - the first ended in a 4xx: kept and replayed (a refused command stays
//     refused);
//   - keys expire TTL (24h) after first use; PurgeExpired deletes them.
//
// The claim on a key is a row in state 'in_flight'. A process that dies
// mid-request leaves it behind; after LeaseTimeout the same request may
// take it over and run again. So the handler must finish within the lease
// (its context carries that deadline) and the command layer must itself be
// idempotent by command id: this package spares clients a second effect,
// it is not the last line of defence.
package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/keel-commerce/keel/events/migrate"
	"github.com/keel-commerce/keel/events/outage"

	"github.com/keel-commerce/keel/services/kit/httpapi"
)

// Header is the request header carrying the key.
const Header = "Idempotency-Key"

// HeaderReplayed is set to "true" on a replayed response.
const HeaderReplayed = "Idempotent-Replayed"

// MaxKeyLength is the longest key accepted, in bytes.
const MaxKeyLength = 255

// KeyPattern is the rule a key must meet, as the OpenAPI documents state
// it: 1 to MaxKeyLength printable ASCII characters, not starting or
// ending with a space (HTTP drops those on the way, so a key sent with
// them would arrive as another key). Any other key is a 400.
const KeyPattern = `^[!-~]([ -~]{0,253}[!-~])?$`

// VersionTable is the goose version table of this component's migrations,
// so it can share a database with the event store and projections.
const VersionTable = "goose_http_idempotency_version"

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates or upgrades the http_idempotency table. Concurrent calls
// from many replicas are safe: a PostgreSQL session lock lets one migrate
// while the others wait.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("migrate %s: %w", VersionTable, err)
	}
	return migrate.Up(ctx, pool, fsys, VersionTable)
}

// Config tunes a Store; zero fields take the defaults named below.
type Config struct {
	// TTL is how long a key is remembered after its first use (24h).
	TTL time.Duration
	// LeaseTimeout is how long a claim may stay in flight before the same
	// request may take it over (2m). It is also the handler's deadline,
	// and must be shorter than TTL.
	LeaseTimeout time.Duration
	// RetryAfter is the delay suggested to a client whose key is in
	// flight (1s, rounded up to whole seconds).
	RetryAfter time.Duration
	// MaxBody limits the request body the Store reads to hash it
	// (httpapi.DefaultMaxBody); a larger body gets a 413 and is not stored.
	MaxBody int64
	// Required makes a request without the header a 400; otherwise such a
	// request runs without idempotency.
	Required bool
	// Logger receives storage failures; nil discards them.
	Logger *slog.Logger
}

// Store keeps Idempotency-Key records in PostgreSQL and wraps command
// handlers with them. It is safe for concurrent use by many goroutines and
// many processes sharing the database.
type Store struct {
	pool *pgxpool.Pool
	cfg  Config
	log  *slog.Logger
}

// New returns a Store on pool (already migrated with Migrate), after
// checking cfg.
func New(pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, errors.New("idempotency: nil pool")
	}
	if cfg.TTL == 0 {
		cfg.TTL = 24 * time.Hour
	}
	if cfg.LeaseTimeout == 0 {
		cfg.LeaseTimeout = 2 * time.Minute
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = time.Second
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = httpapi.DefaultMaxBody
	}
	switch {
	case cfg.TTL < 0, cfg.LeaseTimeout < 0, cfg.RetryAfter < 0, cfg.MaxBody < 0:
		return nil, fmt.Errorf("idempotency: negative config value in %+v", cfg)
	case cfg.LeaseTimeout >= cfg.TTL:
		return nil, fmt.Errorf("idempotency: LeaseTimeout %s must be shorter than TTL %s", cfg.LeaseTimeout, cfg.TTL)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{pool: pool, cfg: cfg, log: log}, nil
}

// PurgeExpired deletes the keys first used more than TTL ago and returns
// how many it deleted. Expired keys are already ignored, so purging only
// reclaims space; run it periodically (hourly is plenty) from any replica.
func (s *Store) PurgeExpired(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx,
		`DELETE FROM http_idempotency WHERE created_at < now() - make_interval(secs => $1)`, s.cfg.TTL.Seconds())
	if err != nil {
		return 0, fmt.Errorf("purge expired idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}

// RunPurge calls PurgeExpired every interval until ctx ends, logging
// failures (a missed purge only delays reclaiming space). It returns nil.
func (s *Store) RunPurge(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := s.PurgeExpired(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("purge idempotency keys", "err", err)
			}
		}
	}
}

// Wrap returns next guarded by Idempotency-Key (see the package comment).
// Wrap command endpoints only, inside the ServeMux, with httpapi.Recover
// outside it: a panic releases the key, then goes on to become a 500.
func (s *Store) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keys := r.Header.Values(Header)
		if len(keys) == 0 {
			if s.cfg.Required {
				httpapi.WriteProblem(w, r, &httpapi.Problem{Type: httpapi.TypeIdempotencyKeyRequired,
					Title: "Idempotency-Key required", Status: http.StatusBadRequest,
					Detail: "this endpoint requires an Idempotency-Key header: a unique value (e.g. a UUID) per command, repeated on retries"})
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if p := checkKey(keys); p != nil {
			httpapi.WriteProblem(w, r, p)
			return
		}
		body, p := readBody(w, r, s.cfg.MaxBody)
		if p != nil {
			httpapi.WriteProblem(w, r, p)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		id := recordID{key: keys[0], method: r.Method, path: r.URL.Path}
		hash := requestHash(r, body)

		// Claim the key, or read what the first request left. A row deleted
		// between the two (the first request failed with a 5xx) means the
		// key is free again: claim once more.
		for range 3 {
			token, owned, err := s.claim(r.Context(), id, hash)
			if err != nil {
				s.fail(w, r, "claim", id, err)
				return
			}
			if owned {
				s.run(w, r, next, id, token)
				return
			}
			rec, found, err := s.load(r.Context(), id)
			if err != nil {
				s.fail(w, r, "load", id, err)
				return
			}
			if !found {
				continue
			}
			switch {
			case !bytes.Equal(rec.hash, hash):
				httpapi.WriteProblem(w, r, &httpapi.Problem{Type: httpapi.TypeIdempotencyKeyReused,
					Title: "Idempotency-Key reused", Status: http.StatusUnprocessableEntity,
					Detail: fmt.Sprintf("Idempotency-Key %q was already used for a different %s %s request (method, path, query or body differ); use a new key for a new command",
						id.key, id.method, id.path)})
			case rec.state == stateInFlight:
				s.inFlight(w, r, id)
			default:
				replay(w, rec)
			}
			return
		}
		s.inFlight(w, r, id)
	})
}

func (s *Store) inFlight(w http.ResponseWriter, r *http.Request, id recordID) {
	secs := int((s.cfg.RetryAfter + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	httpapi.WriteProblem(w, r, &httpapi.Problem{Type: httpapi.TypeIdempotencyKeyInFlight,
		Title: "Request in progress", Status: http.StatusConflict,
		Detail: fmt.Sprintf("a request with Idempotency-Key %q is still in progress; retry after %d s to get its result", id.key, secs)})
}

func (s *Store) fail(w http.ResponseWriter, r *http.Request, what string, id recordID, err error) {
	s.log.ErrorContext(r.Context(), "idempotency store failed", "op", what, "key", id.key, "method", id.method,
		"path", id.path, "request_id", httpapi.RequestIDFrom(r.Context()), "err", err)
	httpapi.WriteProblem(w, r, httpapi.Unexpected(err))
}

// run executes next as the owner of the claim, stores its outcome (unless
// it is a 5xx or a panic) and only then sends it: a client that saw the
// answer can rely on a retry replaying it.
func (s *Store) run(w http.ResponseWriter, r *http.Request, next http.Handler, id recordID, token time.Time) {
	rec := &recorder{header: w.Header().Clone()}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.LeaseTimeout)
	defer cancel()
	done := false
	defer func() {
		if !done { // a panic: free the key, let the panic go on to Recover
			s.release(r, id, token)
		}
	}()
	next.ServeHTTP(rec, r.WithContext(ctx))
	done = true

	status := rec.statusCode()
	if status >= 500 {
		s.release(r, id, token)
	} else if err := s.complete(r, id, token, status, storedHeaders(rec.header), rec.body.Bytes()); err != nil {
		// The command ran and the client gets its answer, but a retry will
		// run it again: the command layer's own idempotency must hold.
		s.log.ErrorContext(r.Context(), "idempotency outcome not stored", "key", id.key, "method", id.method,
			"path", id.path, "request_id", httpapi.RequestIDFrom(r.Context()), "err", err)
		s.release(r, id, token)
	}
	h := w.Header()
	for k, v := range rec.header {
		h[k] = v
	}
	w.WriteHeader(status)
	_, _ = w.Write(rec.body.Bytes())
}

type recordID struct{ key, method, path string }

const stateInFlight = "in_flight"

type record struct {
	hash    []byte
	state   string
	status  int
	headers map[string][]string
	body    []byte
}

// claim inserts an in-flight row, or takes over one that expired or whose
// lease ran out (the same request only). It returns the claim's token.
func (s *Store) claim(ctx context.Context, id recordID, hash []byte) (time.Time, bool, error) {
	var token time.Time
	err := s.pool.QueryRow(ctx, `
		INSERT INTO http_idempotency AS t (key, method, path, request_hash, state, created_at)
		VALUES ($1, $2, $3, $4, 'in_flight', clock_timestamp())
		ON CONFLICT (key, method, path) DO UPDATE
		SET request_hash = EXCLUDED.request_hash, state = 'in_flight',
		    status = NULL, headers = NULL, body = NULL, created_at = EXCLUDED.created_at
		WHERE t.created_at < now() - make_interval(secs => $5)
		   OR (t.state = 'in_flight' AND t.request_hash = EXCLUDED.request_hash
		       AND t.created_at < now() - make_interval(secs => $6))
		RETURNING created_at`,
		id.key, id.method, id.path, hash, s.cfg.TTL.Seconds(), s.cfg.LeaseTimeout.Seconds()).Scan(&token)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("claim idempotency key: %w", err)
	}
	return token, true, nil
}

func (s *Store) load(ctx context.Context, id recordID) (record, bool, error) {
	var rec record
	var status *int
	err := s.pool.QueryRow(ctx, `
		SELECT request_hash, state, status, headers, body FROM http_idempotency
		WHERE key = $1 AND method = $2 AND path = $3`,
		id.key, id.method, id.path).Scan(&rec.hash, &rec.state, &status, &rec.headers, &rec.body)
	if errors.Is(err, pgx.ErrNoRows) {
		return record{}, false, nil
	}
	if err != nil {
		return record{}, false, fmt.Errorf("load idempotency key: %w", err)
	}
	if status != nil {
		rec.status = *status
	}
	return rec, true, nil
}

// storeCtx outlives the request: a client that hangs up must not leave a
// claim behind.
func storeCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
}

func (s *Store) complete(r *http.Request, id recordID, token time.Time, status int, headers map[string][]string, body []byte) error {
	ctx, cancel := storeCtx(r)
	defer cancel()
	if body == nil {
		body = []byte{}
	}
	tag, err := s.pool.Exec(ctx, `
		UPDATE http_idempotency SET state = 'done', status = $5, headers = $6, body = $7
		WHERE key = $1 AND method = $2 AND path = $3 AND state = 'in_flight' AND created_at = $4`,
		id.key, id.method, id.path, token, status, headers, body)
	if err != nil {
		return fmt.Errorf("store idempotent response: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return errors.New("store idempotent response: the claim was taken over (the handler outlived LeaseTimeout)")
	}
	return nil
}

func (s *Store) release(r *http.Request, id recordID, token time.Time) {
	ctx, cancel := storeCtx(r)
	defer cancel()
	err := s.delete(ctx, id, token)
	switch {
	case err == nil:
	case outage.Is(err):
		// The database went down under the command (it answered 503):
		// free the key as soon as it is back, or a retry would get 409
		// in flight until LeaseTimeout.
		s.log.WarnContext(ctx, "idempotency key not released yet: database unavailable", "key", id.key,
			"method", id.method, "path", id.path, "request_id", httpapi.RequestIDFrom(r.Context()), "err", err)
		go s.releaseLater(id, token)
	default:
		// The claim stays until LeaseTimeout; retries get 409 until then.
		s.log.ErrorContext(ctx, "idempotency key not released", "key", id.key, "method", id.method,
			"path", id.path, "request_id", httpapi.RequestIDFrom(r.Context()), "err", err)
	}
}

// releaseLater retries a release with back-off (100 ms doubling to 2 s)
// until it succeeds or the lease would free the key anyway.
func (s *Store) releaseLater(id recordID, token time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), token.Add(s.cfg.LeaseTimeout))
	defer cancel()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := s.delete(ctx, id, token); err == nil {
			return
		}
	}
}

func (s *Store) delete(ctx context.Context, id recordID, token time.Time) error {
	_, err := s.pool.Exec(ctx, `
		DELETE FROM http_idempotency
		WHERE key = $1 AND method = $2 AND path = $3 AND state = 'in_flight' AND created_at = $4`,
		id.key, id.method, id.path, token)
	if err != nil {
		return fmt.Errorf("release idempotency key: %w", err)
	}
	return nil
}

func replay(w http.ResponseWriter, rec record) {
	h := w.Header()
	for k, v := range rec.headers {
		h[http.CanonicalHeaderKey(k)] = v
	}
	h.Set(HeaderReplayed, "true")
	h.Set("Content-Length", strconv.Itoa(len(rec.body)))
	w.WriteHeader(rec.status)
	_, _ = w.Write(rec.body)
}

// storedHeaders keeps the headers that are part of a command's answer:
// what the body is, where the created resource lives, and Keel's own
// (X-Keel-*, Consistency-Token). Per-response headers (Date, request id)
// belong to the replay, not the original.
func storedHeaders(h http.Header) map[string][]string {
	out := make(map[string][]string)
	for k, v := range h {
		ck := http.CanonicalHeaderKey(k)
		switch {
		case ck == "Content-Type", ck == "Location", ck == "Content-Location", ck == "Etag",
			ck == "Consistency-Token", ck == "X-Content-Type-Options", strings.HasPrefix(ck, "X-Keel-"):
			out[ck] = v
		}
	}
	return out
}

func checkKey(keys []string) *httpapi.Problem {
	p := &httpapi.Problem{Type: httpapi.TypeIdempotencyKeyInvalid, Title: "Invalid Idempotency-Key", Status: http.StatusBadRequest}
	key := keys[0]
	switch {
	case len(keys) > 1:
		p.Detail = fmt.Sprintf("send one Idempotency-Key header, not %d", len(keys))
	case key == "":
		p.Detail = "the Idempotency-Key header is empty; send 1 to 255 printable ASCII characters (e.g. a UUID)"
	case len(key) > MaxKeyLength:
		p.Detail = fmt.Sprintf("the Idempotency-Key is %d bytes long; the limit is %d", len(key), MaxKeyLength)
	case key[0] == ' ' || key[len(key)-1] == ' ':
		p.Detail = "the Idempotency-Key starts or ends with a space; send printable ASCII without them (e.g. a UUID)"
	default:
		for i := 0; i < len(key); i++ {
			if key[i] < 0x20 || key[i] > 0x7e {
				p.Detail = fmt.Sprintf("the Idempotency-Key has a non-printable or non-ASCII byte at offset %d; send printable ASCII (e.g. a UUID)", i)
				return p
			}
		}
		return nil
	}
	return p
}

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *httpapi.Problem) {
	if r.Body == nil {
		return nil, nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &httpapi.Problem{Type: httpapi.TypeTooLarge, Title: "Request body too large",
				Status:     http.StatusRequestEntityTooLarge,
				Detail:     fmt.Sprintf("the request body exceeds the limit of %d bytes", mbe.Limit),
				Extensions: map[string]any{"max_bytes": mbe.Limit}}
		}
		return nil, httpapi.BadRequest(fmt.Sprintf("could not read the request body: %v", err))
	}
	return body, nil
}

// requestHash identifies "the same request": method, path, query and body.
// Headers are left out on purpose: a retry through another proxy may
// differ in them and is still the same command.
func requestHash(r *http.Request, body []byte) []byte {
	h := sha256.New()
	for _, part := range []string{r.Method, r.URL.Path, r.URL.RawQuery} {
		fmt.Fprintf(h, "%d:%s\n", len(part), part)
	}
	h.Write(body)
	return h.Sum(nil)
}

// recorder buffers the handler's response so it can be stored before it is
// sent.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (rec *recorder) Header() http.Header { return rec.header }

func (rec *recorder) WriteHeader(code int) {
	if rec.status == 0 && code >= 200 {
		rec.status = code
	}
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.body.Write(b)
}

func (rec *recorder) statusCode() int {
	if rec.status == 0 {
		return http.StatusOK
	}
	return rec.status
}
