// Package stockhttp (directory adapters/http) is the stock service's HTTP
// API: commands to receive, adjust, reserve, release and commit stock, and
// a read of a SKU's current state. It speaks JSON in and out; every error
// is an application/problem+json document with a precise 4xx (see
// services/kit/httpapi), and openapi.json, embedded as OpenAPI, describes
// every route.
//
// # Command ids
//
// Every command carries an id and the stock app decides each id once
// (events/command): the Idempotency-Key header scoped by method and path
// (idempotency.CommandID) when present, else the body's command_id, else a
// fresh KSUID. Command routes are also wrapped by the Idempotency-Key store, which replays the
// first answer byte for byte and refuses the same key with another body.
//
// # Consistency
//
// A successful answer carries a Consistency-Token header
// (events/consistency): the version each SKU stream the command read had
// reached after it (on GET, the SKU's stream at the version shown). A query
// that passes it back waits until its read model has applied those
// versions.
package stockhttp

import (
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consistency"
	"github.com/keel-commerce/keel/services/kit/httpapi"
	"github.com/keel-commerce/keel/services/kit/idempotency"
	"github.com/keel-commerce/keel/services/stock/app"
)

// OpenAPI is the API's OpenAPI 3.0 document, served at /openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// Limits of a request, checked before anything is stored.
const (
	// MaxLines is the most lines one reservation may ask for.
	MaxLines = 100
	// MaxTTL is the longest reservation time to live a request may ask for.
	MaxTTL = 30 * 24 * time.Hour
	// MaxIDs is the most reservation ids a release or commit may name.
	MaxIDs = 100
)

// Problem types of the stock API, beside the shared ones of httpapi.
const (
	TypeInsufficientStock  = httpapi.ProblemBase + "insufficient-stock"
	TypeAlreadyReserved    = httpapi.ProblemBase + "already-reserved"
	TypeBelowReserved      = httpapi.ProblemBase + "below-reserved"
	TypeOnHandLimit        = httpapi.ProblemBase + "on-hand-limit"
	TypeUnknownReservation = httpapi.ProblemBase + "unknown-reservation"
	TypeUnknownOrder       = httpapi.ProblemBase + "unknown-order"
	TypeUnknownSKU         = httpapi.ProblemBase + "unknown-sku"
	TypeUnavailable        = httpapi.ProblemBase + "unavailable"
)

// Routes are the API's routes as ServeMux patterns; Register mounts exactly
// these, and the OpenAPI test checks the document against them.
var Routes = []string{
	"POST /stock/{sku}/receive",
	"POST /stock/{sku}/adjust",
	"GET /stock/{sku}",
	"POST /reservations",
	"POST /reservations/{order_id}/release",
	"POST /reservations/{order_id}/commit",
}

// API serves the stock routes. It is safe for concurrent use.
type API struct {
	svc  *app.Service
	keys *idempotency.Store
	log  *slog.Logger
}

// New returns the API over svc. keys guards the command routes with
// Idempotency-Key (nil: no HTTP-level replay, command ids still dedupe).
func New(svc *app.Service, keys *idempotency.Store, logger *slog.Logger) *API {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &API{svc: svc, keys: keys, log: logger}
}

// Register mounts Routes on mux.
func (a *API) Register(mux *http.ServeMux) {
	cmd := func(h http.HandlerFunc) http.Handler {
		if a.keys == nil {
			return h
		}
		return a.keys.Wrap(h)
	}
	mux.Handle("POST /stock/{sku}/receive", cmd(a.receive))
	mux.Handle("POST /stock/{sku}/adjust", cmd(a.adjust))
	mux.HandleFunc("GET /stock/{sku}", a.get)
	mux.Handle("POST /reservations", cmd(a.reserve))
	mux.Handle("POST /reservations/{order_id}/release", cmd(a.release))
	mux.Handle("POST /reservations/{order_id}/commit", cmd(a.commit))
}

func (a *API) receive(w http.ResponseWriter, r *http.Request) {
	req := ReceiveRequest{sku: r.PathValue("sku")}
	if p := httpapi.Decode(w, r, &req); p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	id := idempotency.CommandID(r, req.CommandID)
	res, err := a.svc.Receive(r.Context(), app.Receive{CommandID: id, SKU: req.sku, Warehouse: req.WarehouseID,
		Quantity: *req.Quantity, Reference: req.Reference})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.ok(w, r, http.StatusOK, res.Streams, CommandResponse{CommandID: id, SKU: req.sku})
}

func (a *API) adjust(w http.ResponseWriter, r *http.Request) {
	req := AdjustRequest{sku: r.PathValue("sku")}
	if p := httpapi.Decode(w, r, &req); p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	id := idempotency.CommandID(r, req.CommandID)
	res, err := a.svc.Adjust(r.Context(), app.Adjust{CommandID: id, SKU: req.sku, Warehouse: req.WarehouseID,
		Delta: *req.Delta, Reason: adjustmentReasons[req.Reason], Note: req.Note})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.ok(w, r, http.StatusOK, res.Streams, CommandResponse{CommandID: id, SKU: req.sku})
}

func (a *API) reserve(w http.ResponseWriter, r *http.Request) {
	var req ReserveRequest
	if p := httpapi.Decode(w, r, &req); p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	id := idempotency.CommandID(r, req.CommandID)
	c := app.Reserve{CommandID: id, OrderID: req.OrderID, CheckoutID: req.CheckoutID, PaymentMethod: req.PaymentMethod}
	for _, l := range req.Lines {
		c.Lines = append(c.Lines, app.Line{SKU: l.SKU, Quantity: *l.Quantity})
	}
	if req.TTLSeconds != nil {
		c.TTL = time.Duration(*req.TTLSeconds) * time.Second
	}
	res, err := a.svc.Reserve(r.Context(), c)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := ReservationResponse{CommandID: id}
	if err := jsonUnmarshal(res.Response, &out.Allocation); err != nil {
		a.internal(w, r, fmt.Errorf("reservation %s: stored response: %w", id, err))
		return
	}
	a.ok(w, r, http.StatusCreated, res.Streams, out)
}

func (a *API) release(w http.ResponseWriter, r *http.Request) {
	req := ReleaseRequest{orderID: r.PathValue("order_id")}
	if p := httpapi.Decode(w, r, &req); p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	id := idempotency.CommandID(r, req.CommandID)
	res, err := a.svc.Release(r.Context(), app.Release{CommandID: id, OrderID: req.orderID,
		ReservationIDs: req.ReservationIDs, Reason: releaseReasons[req.Reason]})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.ok(w, r, http.StatusOK, res.Streams, OrderCommandResponse{CommandID: id, OrderID: req.orderID})
}

func (a *API) commit(w http.ResponseWriter, r *http.Request) {
	req := CommitRequest{orderID: r.PathValue("order_id")}
	// The body is optional: commit every open reservation of the order.
	if r.ContentLength != 0 || r.Header.Get("Content-Type") != "" {
		if p := httpapi.Decode(w, r, &req); p != nil {
			httpapi.WriteProblem(w, r, p)
			return
		}
	} else if errs := req.Validate(); len(errs) > 0 {
		httpapi.WriteProblem(w, r, httpapi.Invalid(errs))
		return
	}
	id := idempotency.CommandID(r, req.CommandID)
	res, err := a.svc.Commit(r.Context(), app.Commit{CommandID: id, OrderID: req.orderID, ReservationIDs: req.ReservationIDs})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.ok(w, r, http.StatusOK, res.Streams, OrderCommandResponse{CommandID: id, OrderID: req.orderID})
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	sku := r.PathValue("sku")
	var errs httpapi.FieldErrors
	errs.SKU("sku", sku, true)
	if len(errs) > 0 {
		httpapi.WriteProblem(w, r, httpapi.Invalid(errs))
		return
	}
	st, v, err := a.svc.Read(r.Context(), sku)
	if err != nil {
		a.internal(w, r, err)
		return
	}
	if v.Version == 0 {
		httpapi.WriteProblem(w, r, unknownSKU(sku))
		return
	}
	a.ok(w, r, http.StatusOK, map[string]int64{app.Stream(sku): v.Version}, stockView(st, v.Version))
}

func unknownSKU(sku string) *httpapi.Problem {
	return &httpapi.Problem{Type: TypeUnknownSKU, Title: "Unknown SKU", Status: http.StatusNotFound,
		Detail: fmt.Sprintf("SKU %s has never been received or adjusted", sku), Extensions: map[string]any{"sku": sku}}
}

// ok answers v with the token of streams (stream → version).
func (a *API) ok(w http.ResponseWriter, r *http.Request, status int, streams map[string]int64, v any) {
	if tok := consistency.New("stock", streams); !tok.IsZero() {
		w.Header().Set(consistency.Header, tok.String())
	}
	if err := httpapi.WriteJSON(w, status, v); err != nil {
		a.log.ErrorContext(r.Context(), "write response", "path", r.URL.Path, "err", err)
	}
}

func (a *API) internal(w http.ResponseWriter, r *http.Request, err error) {
	a.log.ErrorContext(r.Context(), "stock request failed", "method", r.Method, "path", r.URL.Path,
		"request_id", httpapi.RequestIDFrom(r.Context()), "err", err)
	httpapi.WriteProblem(w, r, httpapi.Unexpected(err))
}

var (
	// "insufficient stock of S: requested 3, available 1" (domain.InsufficientStockError)
	insufficientRe = regexp.MustCompile(`insufficient stock of (\S+): requested (\d+), available (-?\d+)`)
	// "... W has 5 on hand, 3 reserved, delta -4" (domain.ErrBelowReserved)
	belowReservedRe = regexp.MustCompile(`(\S+) has (-?\d+) on hand, (-?\d+) reserved, delta (-?\d+)`)
)

// fail maps a command's error to its problem. Refusals are read from the
// stored rejection (code and detail), so a command replayed by id answers
// as its first execution did.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	if p := idempotency.CommandIDReused(err); p != nil {
		httpapi.WriteProblem(w, r, p)
		return
	}
	var rej *command.Rejection
	switch {
	case errors.As(err, &rej):
		httpapi.WriteProblem(w, r, a.refusal(r, rej))
	case errors.Is(err, app.ErrUnknownOrder):
		httpapi.WriteProblem(w, r, &httpapi.Problem{Type: TypeUnknownOrder, Title: "Unknown order", Status: http.StatusNotFound,
			Detail: fmt.Sprintf("no reservation was ever made for order %s", r.PathValue("order_id"))})
	case errors.Is(err, app.ErrInvalid):
		httpapi.WriteProblem(w, r, httpapi.Invalid([]httpapi.FieldError{{Message: err.Error()}}))
	case errors.Is(err, command.ErrClosed):
		w.Header().Set("Retry-After", "1")
		httpapi.WriteProblem(w, r, &httpapi.Problem{Type: TypeUnavailable, Title: "Shutting down", Status: http.StatusServiceUnavailable,
			Detail: "the instance is shutting down; retry with the same Idempotency-Key"})
	default:
		a.internal(w, r, err)
	}
}

func (a *API) refusal(r *http.Request, rej *command.Rejection) *httpapi.Problem {
	p := &httpapi.Problem{Status: http.StatusConflict, Detail: rej.Detail, Extensions: map[string]any{"code": rej.Code}}
	switch rej.Code {
	case app.CodeInsufficientStock:
		p.Type, p.Title = TypeInsufficientStock, "Insufficient stock"
		if m := insufficientRe.FindStringSubmatch(rej.Detail); m != nil {
			req, _ := strconv.ParseInt(m[2], 10, 64)
			avail, _ := strconv.ParseInt(m[3], 10, 64)
			p.Extensions["sku"], p.Extensions["requested"], p.Extensions["available"] = m[1], req, avail
			if avail == 0 {
				// Nothing available may mean the SKU does not exist at all.
				if _, v, err := a.svc.Read(r.Context(), m[1]); err == nil && v.Version == 0 {
					return unknownSKU(m[1])
				}
			}
		}
	case app.CodeAlreadyReserved:
		p.Type, p.Title = TypeAlreadyReserved, "Already reserved"
	case app.CodeBelowReserved:
		p.Type, p.Title = TypeBelowReserved, "Adjustment below reserved"
		if m := belowReservedRe.FindStringSubmatch(rej.Detail); m != nil {
			onHand, _ := strconv.ParseInt(m[2], 10, 64)
			reserved, _ := strconv.ParseInt(m[3], 10, 64)
			p.Extensions["warehouse_id"], p.Extensions["on_hand"], p.Extensions["reserved"] = m[1], onHand, reserved
			p.Extensions["available"] = onHand - reserved
		}
	case app.CodeOnHandLimit:
		p.Type, p.Title = TypeOnHandLimit, "On hand limit"
	case app.CodeUnknownReservation:
		p.Type, p.Title, p.Status = TypeUnknownReservation, "Unknown reservation", http.StatusNotFound
	case app.CodeInvalid:
		p.Type, p.Title, p.Status = httpapi.TypeValidation, "Invalid request", http.StatusUnprocessableEntity
	default:
		p.Type, p.Title = httpapi.TypeConflict, "Conflict"
	}
	return p
}
