// Package http is the checkout saga's read API: GET /checkouts/{id} shows a
// checkout's state, each step with the time it completed (and was undone),
// and why it failed. The saga has no command endpoints: checkouts start
// from carts.v1.CheckoutRequested on carts.events.
package http

import (
	"context"
	_ "embed"
	"log/slog"
	"net/http"

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

// API serves the checkout routes. Safe for concurrent use.
type API struct {
	r   Reader
	log *slog.Logger
}

// New returns the API over r.
func New(r Reader, logger *slog.Logger) *API {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &API{r: r, log: logger}
}

// Register mounts GET /checkouts/{id} on mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc(Routes[0].Method+" "+Routes[0].Path, a.get)
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, ok, err := a.r.Get(r.Context(), id)
	if err != nil {
		a.log.ErrorContext(r.Context(), "get checkout", "checkout_id", id, "err", err)
		httpapi.WriteProblem(w, r, httpapi.Internal())
		return
	}
	if !ok {
		httpapi.WriteProblem(w, r, httpapi.NotFound("no checkout "+id))
		return
	}
	_ = httpapi.WriteJSON(w, http.StatusOK, c.View())
}
