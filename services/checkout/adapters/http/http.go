// Package http is the checkout saga's read API: GET /checkouts/{id} shows a
// checkout's state, each step with the time it completed (and was undone),
// and why it failed. The saga has no command endpoints: checkouts start
// from carts.v1.CheckoutRequested on carts.events.
//
// A client following a checkout long-polls rather than polls:
// ?version=N&wait=10s answers as soon as the checkout has more than N
// events (or has ended), else after the wait with the state as it is; a
// checkout id the saga does not know is a 404 at once (a client that has
// just asked for the checkout polls again after a pause); each answer's version is the next request's N. One request per
// change instead of one per poll interval, and the change is seen at once.
// A client that only wants the end adds &until=ended: the answer comes when
// the checkout has completed or failed (or the wait is over).
package http

import (
	"context"
	_ "embed"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/keel-commerce/keel/services/checkout/domain"
	"github.com/keel-commerce/keel/services/kit/httpapi"
)

// OpenAPI is the API's OpenAPI 3.0 document, served at /openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// Route is one route of the API.
type Route struct{ Method, Path string }

// Routes are the API's routes (the ops routes aside), for the test that
// holds the OpenAPI document to them.
var Routes = []Route{{"GET", "/checkouts/{id}"}}

// Reader is what the API needs of the saga: *app.Saga implements it.
type Reader interface {
	Get(ctx context.Context, id string) (*domain.Checkout, bool, error)
}

// Watcher, when the Reader implements it too (*app.Saga does), wakes a
// long poll at once when this process records a change of the checkout
// (with ended, only one that completes or fails it); without it, or for
// changes recorded by another replica, a long poll re-reads after
// FirstRecheck, then at doubling intervals up to MaxRecheck.
type Watcher interface {
	Changed(id string, ended bool) (<-chan struct{}, func())
}

// Long-poll bounds. The re-reads are few: with thousands of checkouts in
// flight each held by a long poll, a fixed short interval made the re-reads
// most of the saga's work.
const (
	MaxWait      = httpapi.MaxWait
	FirstRecheck = 250 * time.Millisecond
	MaxRecheck   = 4 * time.Second
)

// API serves the checkout routes. Safe for concurrent use.
type API struct {
	r   Reader
	log *slog.Logger
	// FirstRecheck is a long poll's first re-read (default the package's
	// FirstRecheck): shorter where replicas share the load, longer in
	// tests that must tell a wake-up from a re-read.
	FirstRecheck time.Duration
}

// New returns the API over r.
func New(r Reader, logger *slog.Logger) *API {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &API{r: r, log: logger, FirstRecheck: FirstRecheck}
}

// Register mounts GET /checkouts/{id} on mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc(Routes[0].Method+" "+Routes[0].Path, a.get)
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	wait, after, untilEnded, p := longPoll(r)
	if p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	deadline := time.Now().Add(wait)
	recheck := a.FirstRecheck
	var c *domain.Checkout
	var ok bool
	for {
		// Watch before reading, so a change between the read and the wait
		// is not missed.
		var changed <-chan struct{}
		stop := func() {}
		if wt, can := a.r.(Watcher); can && wait > 0 {
			changed, stop = wt.Changed(id, untilEnded)
		}
		var err error
		c, ok, err = a.r.Get(r.Context(), id)
		if err != nil {
			stop()
			a.log.ErrorContext(r.Context(), "get checkout", "checkout_id", id, "err", err)
			httpapi.WriteProblem(w, r, httpapi.Unexpected(err))
			return
		}
		// An unknown checkout is answered at once: nothing would wake the
		// wait, and a client that has just asked for it polls again.
		left := time.Until(deadline)
		if left <= 0 || !ok || (c.Version() > after && !untilEnded) || c.Status().Terminal() {
			stop()
			break
		}
		t := time.NewTimer(min(left, recheck))
		recheck = min(2*recheck, max(MaxRecheck, a.FirstRecheck))
		select {
		case <-changed:
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
		stop()
		if r.Context().Err() != nil {
			return // the client left
		}
	}
	if !ok {
		httpapi.WriteProblem(w, r, httpapi.NotFound("no checkout "+id))
		return
	}
	_ = httpapi.WriteJSON(w, http.StatusOK, c.View())
}

// longPoll reads ?wait= (a duration up to MaxWait, default 0: answer at
// once), ?version= (the version the client has, default 0) and ?until=
// ("ended", or nothing for any change).
func longPoll(r *http.Request) (time.Duration, int64, bool, *httpapi.Problem) {
	if p := httpapi.EmptyParams(r); p != nil {
		return 0, 0, false, p
	}
	q := r.URL.Query()
	var wait time.Duration
	var after int64
	var errs httpapi.FieldErrors
	if v := q.Get("wait"); v != "" {
		d, err := httpapi.ParseWait(v)
		if err != nil {
			errs.Add("wait", "must be a duration from 0s to %s, such as 10s (%v)", MaxWait, err)
		}
		wait = d
	}
	if v := q.Get("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			errs.Add("version", "must be a version the checkout had (an integer >= 0); got %q", v)
		}
		after = n
	}
	until := q.Get("until")
	if until != "" && until != "ended" {
		errs.Add("until", `must be "ended" (answer when the checkout has completed or failed) or absent; got %q`, until)
	}
	if len(errs) > 0 {
		return 0, 0, false, httpapi.BadRequest("invalid query parameters", errs...)
	}
	return wait, after, until == "ended", nil
}
