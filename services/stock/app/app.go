// Package app runs the stock service's commands: load → decide → append
// through events/command, one stream per SKU ("stock-<sku>"), each command
// decided once per command id.
//
// # Hot SKUs
//
// A flash sale on one SKU must not turn into a storm of optimistic
// conflicts. The command handler locks a command's streams before reading
// them (one writer per stream, so a decision is never stale and never
// retried), and queues the commands for the same streams that arrive while
// one transaction runs, deciding them together in the next: one lock, one
// append, one commit for a whole batch. A single-SKU reservation only
// locks that SKU's stream, so all reservations of a hot SKU share one lane
// and batch; a multi-SKU order locks all its SKU streams in one command, all
// or nothing.
//
// # Finding an order's SKUs
//
// Release and commit name an order, not its SKUs. An accepted Reserve
// writes the order's SKUs to stock_order_skus in the transaction that
// appends its events (command.Decision.Writes), so a reservation never
// exists without its row and a refused one leaves no row behind.
package app

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/migrate"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/services/kit/timers"
	"github.com/keel-commerce/keel/services/stock/domain"
)

// DefaultTTL is how long a reservation holds when neither the command nor
// the payment method says otherwise.
const DefaultTTL = 15 * time.Minute

// StreamPrefix starts every SKU stream's id.
const StreamPrefix = "stock-"

// Stream is the stream id of a SKU.
func Stream(sku string) string { return StreamPrefix + sku }

// AllocationPrefix starts the stream of an order's failed allocations.
const AllocationPrefix = "allocation-"

// AllocationStream is the stream of an order's failed allocations
// (AllocationFailed), apart from the SKUs' streams.
func AllocationStream(order string) string { return AllocationPrefix + order }

// ErrInvalid marks a command refused before anything was decided or stored
// (bad shape: missing fields, non-positive quantities). HTTP answers 422.
var ErrInvalid = errors.New("invalid command")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Rejection codes stored with refused commands (command.Rejection.Code).
const (
	CodeInsufficientStock  = "insufficient_stock"
	CodeUnknownReservation = "unknown_reservation"
	CodeAlreadyReserved    = "already_reserved"
	CodeBelowReserved      = "below_reserved"
	CodeNotDue             = "not_due"
	CodeOnHandLimit        = "on_hand_limit"
	CodeInvalid            = "invalid"
)

// Code is the rejection code of a domain error.
func Code(err error) string {
	switch {
	case errors.Is(err, domain.ErrInsufficientStock):
		return CodeInsufficientStock
	case errors.Is(err, domain.ErrUnknownReservation):
		return CodeUnknownReservation
	case errors.Is(err, domain.ErrAlreadyReserved):
		return CodeAlreadyReserved
	case errors.Is(err, domain.ErrBelowReserved):
		return CodeBelowReserved
	case errors.Is(err, domain.ErrNotDue):
		return CodeNotDue
	case errors.Is(err, domain.ErrTooMany):
		// A well-formed count refused for what the SKU already holds: a
		// conflict with its state, not an invalid request.
		return CodeOnHandLimit
	}
	return CodeInvalid
}

// Config is the service's behaviour; the zero value uses the defaults.
type Config struct {
	// DefaultTTL of a reservation; default 15 minutes.
	DefaultTTL time.Duration
	// TTLByPaymentMethod overrides DefaultTTL per payment method (e.g. a
	// bank transfer holds longer than a card).
	TTLByPaymentMethod map[string]time.Duration
	// WarehousePriority is the order warehouses are drawn from; warehouses
	// it does not name follow by id.
	WarehousePriority []string
	// Now is the clock; default time.Now. Tests inject one.
	Now func() time.Time
	// NewID names reservations; default a KSUID.
	NewID      func() string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Service executes stock commands. Safe for concurrent use.
type Service struct {
	st  *pg.Store
	reg *codec.Registry
	h   *command.Handler[*domain.Stock]
	cfg Config

	timers *timers.Queue
}

// Registry returns the stock context's payload registry.
func Registry() (*codec.Registry, error) {
	return codec.NewRegistry(stockv1.File_keel_stock_v1_stock_proto)
}

// Aggregate wires domain.Stock into the command handler.
func Aggregate() command.Aggregate[*domain.Stock] {
	return command.Aggregate[*domain.Stock]{
		New: func(stream string) *domain.Stock { return domain.New(strings.TrimPrefix(stream, StreamPrefix)) },
		Apply: func(s *domain.Stock, e proto.Message) *domain.Stock {
			s.Apply(e)
			return s
		},
	}
}

// VersionTable is the goose version table of the service's migrations
// (stock_order_skus, stock_timers), so they evolve apart from the event
// store's.
const VersionTable = "goose_stock_version"

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates or upgrades the service's tables; replicas starting
// together are serialized by migrate's session lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrate.UpDir(ctx, pool, migrations, "migrations", VersionTable)
}

// New migrates the service's tables and creates its command handler and
// expiry timers on st.
func New(ctx context.Context, st *pg.Store, cfg Config) (*Service, error) {
	if cfg.DefaultTTL <= 0 {
		cfg.DefaultTTL = DefaultTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewID == nil {
		cfg.NewID = func() string { return ksuid.New().String() }
	}
	for m, ttl := range cfg.TTLByPaymentMethod {
		if ttl <= 0 {
			return nil, fmt.Errorf("stock config: ttl of payment method %q must be positive", m)
		}
	}
	reg, err := Registry()
	if err != nil {
		return nil, err
	}
	if err := Migrate(ctx, st.Pool()); err != nil {
		return nil, err
	}
	h, err := command.New(ctx, st, reg, Aggregate(), command.Options{Name: "stock", Logger: cfg.Logger, Registerer: cfg.Registerer})
	if err != nil {
		return nil, err
	}
	s := &Service{st: st, reg: reg, h: h, cfg: cfg}
	if s.timers, err = s.newTimers(); err != nil {
		return nil, err
	}
	return s, nil
}

// Receive books units into a warehouse.
type Receive struct {
	CommandID, SKU, Warehouse, Reference string
	Quantity                             int64
}

// Adjust corrects on-hand units.
type Adjust struct {
	CommandID, SKU, Warehouse, Note string
	Delta                           int64
	Reason                          stockv1.AdjustmentReason
}

// Line is a quantity of a SKU.
type Line struct {
	SKU      string `json:"sku"`
	Quantity int64  `json:"quantity"`
}

// Reserve reserves an order's lines, all or nothing across SKUs.
type Reserve struct {
	CommandID, OrderID, CheckoutID, PaymentMethod string
	Lines                                         []Line
	// TTL overrides the payment method's and the default when > 0.
	TTL time.Duration
	// RecordFailure records a failed allocation (AllocationFailed on the
	// order's stream) for a caller that learns outcomes from stock.events,
	// the checkout saga; a synchronous caller (HTTP) gets the refusal and
	// nothing is stored. Either way nothing is reserved.
	RecordFailure bool
}

// Release gives back an order's reservations (all when ReservationIDs is empty).
type Release struct {
	CommandID, OrderID string
	ReservationIDs     []string
	Reason             stockv1.ReleaseReason
}

// Commit turns an order's reservations into units leaving stock.
type Commit struct {
	CommandID, OrderID string
	ReservationIDs     []string
}

// Allocation is the stored response of a reservation: the lines it
// reserved, or, when it failed for want of stock, the shortages (and
// Reserve returns a refusal).
type Allocation struct {
	OrderID   string              `json:"order_id"`
	ExpiresAt time.Time           `json:"expires_at"`
	Lines     []AllocatedLine     `json:"lines"`
	Shortages []*stockv1.Shortage `json:"shortages,omitempty"`
}

// AllocatedLine is the part of a line one warehouse holds.
type AllocatedLine struct {
	SKU           string `json:"sku"`
	WarehouseID   string `json:"warehouse_id"`
	Quantity      int64  `json:"quantity"`
	ReservationID string `json:"reservation_id"`
}

func single(sku string, decide func(*domain.Stock) ([]proto.Message, error)) func(map[string]*domain.Stock) (command.Decision, error) {
	return func(states map[string]*domain.Stock) (command.Decision, error) {
		evs, err := decide(states[Stream(sku)])
		if err != nil {
			return command.Decision{}, command.Reject(Code(err), err)
		}
		return command.Decision{Events: map[string][]proto.Message{Stream(sku): evs}}, nil
	}
}

// Receive runs a ReceiveStock command.
func (s *Service) Receive(ctx context.Context, c Receive) (command.Result, error) {
	switch {
	case c.CommandID == "":
		return command.Result{}, invalid("command id is required")
	case c.SKU == "":
		return command.Result{}, invalid("sku is required")
	case c.Warehouse == "":
		return command.Result{}, invalid("warehouse_id is required")
	case c.Quantity <= 0:
		return command.Result{}, invalid("quantity must be positive")
	}
	now := s.cfg.Now()
	return s.h.Execute(ctx, command.Command[*domain.Stock]{ID: c.CommandID, Streams: []string{Stream(c.SKU)},
		Fingerprint: command.Fingerprint{Kind: "ReceiveStock", Target: c.SKU, Input: c},
		Decide: single(c.SKU, func(st *domain.Stock) ([]proto.Message, error) {
			return st.Receive(c.Warehouse, c.Quantity, c.Reference, now)
		})})
}

// Adjust runs an AdjustStock command.
func (s *Service) Adjust(ctx context.Context, c Adjust) (command.Result, error) {
	switch {
	case c.CommandID == "":
		return command.Result{}, invalid("command id is required")
	case c.SKU == "":
		return command.Result{}, invalid("sku is required")
	case c.Warehouse == "":
		return command.Result{}, invalid("warehouse_id is required")
	case c.Delta == 0:
		return command.Result{}, invalid("delta must not be zero")
	case c.Reason == 0 || stockv1.AdjustmentReason_name[int32(c.Reason)] == "":
		return command.Result{}, invalid("reason is required")
	}
	now := s.cfg.Now()
	return s.h.Execute(ctx, command.Command[*domain.Stock]{ID: c.CommandID, Streams: []string{Stream(c.SKU)},
		Fingerprint: command.Fingerprint{Kind: "AdjustStock", Target: c.SKU, Input: c},
		Decide: single(c.SKU, func(st *domain.Stock) ([]proto.Message, error) {
			return st.Adjust(c.Warehouse, c.Delta, c.Reason, c.Note, now)
		})})
}

// TTL is the reservation time to live for a payment method.
func (s *Service) TTL(paymentMethod string) time.Duration {
	if ttl, ok := s.cfg.TTLByPaymentMethod[paymentMethod]; ok {
		return ttl
	}
	return s.cfg.DefaultTTL
}

// Reserve runs a ReserveStock command: every line or none. An order that
// cannot be served for want of stock is refused (code insufficient_stock,
// every short line in the detail), first time and on every repeat; with
// RecordFailure the failure is also stored as AllocationFailed, once per
// command id.
func (s *Service) Reserve(ctx context.Context, c Reserve) (command.Result, error) {
	switch {
	case c.CommandID == "":
		return command.Result{}, invalid("command id is required")
	case c.OrderID == "":
		return command.Result{}, invalid("order_id is required")
	case len(c.Lines) == 0:
		return command.Result{}, invalid("lines are required")
	case c.TTL < 0:
		return command.Result{}, invalid("ttl must be positive")
	}
	skus := make([]string, 0, len(c.Lines))
	for i, l := range c.Lines {
		switch {
		case l.SKU == "":
			return command.Result{}, invalid("line %d: sku is required", i)
		case l.Quantity <= 0:
			return command.Result{}, invalid("line %d: quantity must be positive", i)
		case slices.Contains(skus, l.SKU):
			return command.Result{}, invalid("line %d: sku %s appears twice", i, l.SKU)
		}
		skus = append(skus, l.SKU)
	}
	ttl := c.TTL
	if ttl == 0 {
		ttl = s.TTL(c.PaymentMethod)
	}
	now := s.cfg.Now()
	lines := make([]domain.OrderLine, len(c.Lines))
	streams := make([]string, 0, len(skus)+1)
	for i, l := range c.Lines {
		lines[i] = domain.OrderLine{SKU: l.SKU, Quantity: l.Quantity}
		streams = append(streams, Stream(l.SKU))
	}
	if c.RecordFailure {
		// A failed allocation is recorded on the order's own stream, never
		// on a SKU's: a SKU nobody ever received must stay unknown.
		streams = append(streams, AllocationStream(c.OrderID))
	}
	// Whether a failure is recorded depends on the transport, not on what
	// the caller asked: the same reservation over HTTP and Kafka is one command.
	in := c
	in.RecordFailure = false
	res, err := s.h.Execute(ctx, command.Command[*domain.Stock]{ID: c.CommandID, Streams: streams,
		Fingerprint: command.Fingerprint{Kind: "ReserveStock", Target: c.OrderID, Input: in},
		Decide: func(states map[string]*domain.Stock) (command.Decision, error) {
			a, err := domain.Allocate(domain.AllocateRequest{Order: c.OrderID, CheckoutID: c.CheckoutID, Lines: lines,
				TTL: ttl, Priority: s.cfg.WarehousePriority}, func(sku string) *domain.Stock { return states[Stream(sku)] }, now, s.cfg.NewID)
			if err == nil && a.Failed != nil && !c.RecordFailure {
				err = domain.ShortageError(a.Failed.GetShortages())
			}
			if err != nil {
				return command.Decision{}, command.Reject(Code(err), err)
			}
			alloc := Allocation{OrderID: c.OrderID, ExpiresAt: now.Add(ttl).UTC()}
			dec := command.Decision{Events: map[string][]proto.Message{}}
			if a.Failed != nil {
				// Not a refusal: the failure is a fact the saga waits for,
				// stored with the command's outcome, so a repeated command
				// answers the same and records nothing more.
				dec.Events[AllocationStream(c.OrderID)] = []proto.Message{a.Failed}
				alloc = Allocation{OrderID: c.OrderID, Shortages: a.Failed.GetShortages()}
				dec.Response, err = json.Marshal(alloc)
				return dec, err
			}
			for _, l := range c.Lines {
				evs := a.Reserved[l.SKU]
				for _, e := range evs {
					r := e.(*stockv1.StockReserved)
					alloc.Lines = append(alloc.Lines, AllocatedLine{SKU: r.GetSku(), WarehouseID: r.GetWarehouseId(),
						Quantity: r.GetQuantity(), ReservationID: r.GetReservationId()})
				}
				dec.Events[Stream(l.SKU)] = evs
			}
			// The order's SKUs commit with its reservations, in the
			// command's transaction: a reservation never exists without
			// its row, and a refused one leaves none.
			dec.Statements = []command.Statement{{SQL: `INSERT INTO stock_order_skus (order_id, sku)
SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING`, Args: []any{c.OrderID, skus}}}
			dec.Response, err = json.Marshal(alloc)
			return dec, err
		}})
	if err != nil {
		return res, err
	}
	return res, shortage(res.Response)
}

// shortage turns a stored failed allocation into the command's refusal
// (code insufficient_stock, detail naming every short line), for the
// first answer and every replay alike.
func shortage(response []byte) error {
	var a struct {
		Shortages []*stockv1.Shortage `json:"shortages"`
	}
	if err := json.Unmarshal(response, &a); err != nil {
		return fmt.Errorf("stored allocation: %w", err)
	}
	if len(a.Shortages) == 0 {
		return nil
	}
	err := domain.ShortageError(a.Shortages)
	return command.Reject(Code(err), err)
}

// orderStreams returns the streams of the SKUs an order asked for.
func (s *Service) orderStreams(ctx context.Context, order string) ([]string, error) {
	rows, err := s.st.Pool().Query(ctx, `SELECT sku FROM stock_order_skus WHERE order_id = $1 ORDER BY sku`, order)
	if err != nil {
		return nil, fmt.Errorf("skus of order %s: %w", order, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var sku string
		if err := rows.Scan(&sku); err != nil {
			return nil, err
		}
		out = append(out, Stream(sku))
	}
	return out, rows.Err()
}

// ErrUnknownOrder means no reservation was ever asked for the order.
var ErrUnknownOrder = fmt.Errorf("%w: no reservation was asked for this order", domain.ErrUnknownReservation)

// orderCommand decides per SKU of the order with each SKU's share of ids;
// it is refused when no SKU has anything to act on or an id is nowhere.
func (s *Service) orderCommand(ctx context.Context, id, order string, ids []string, fp command.Fingerprint,
	act func(st *domain.Stock, ids []string) ([]proto.Message, error)) (command.Result, error) {
	switch {
	case id == "":
		return command.Result{}, invalid("command id is required")
	case order == "":
		return command.Result{}, invalid("order_id is required")
	}
	streams, err := s.orderStreams(ctx, order)
	if err != nil {
		return command.Result{}, err
	}
	if len(streams) == 0 {
		return command.Result{}, fmt.Errorf("order %s: %w", order, ErrUnknownOrder)
	}
	return s.h.Execute(ctx, command.Command[*domain.Stock]{ID: id, Streams: streams, Fingerprint: fp,
		Decide: func(states map[string]*domain.Stock) (command.Decision, error) {
			dec := command.Decision{Events: map[string][]proto.Message{}}
			found := map[string]bool{}
			for _, stream := range streams {
				st := states[stream]
				var own []string
				for _, rid := range ids {
					if r, ok := st.Reservation(rid); ok && r.Order == order {
						own = append(own, rid)
						found[rid] = true
					}
				}
				if len(ids) > 0 && len(own) == 0 {
					continue
				}
				if _, err := st.OrderReservations(order, own); err != nil {
					continue // nothing of this order on this SKU
				}
				evs, err := act(st, own)
				if err != nil {
					return command.Decision{}, command.Reject(Code(err), err)
				}
				dec.Events[stream] = evs
			}
			for _, rid := range ids {
				if !found[rid] {
					err := fmt.Errorf("%w: %s of order %s", domain.ErrUnknownReservation, rid, order)
					return command.Decision{}, command.Reject(Code(err), err)
				}
			}
			if len(dec.Events) == 0 {
				err := fmt.Errorf("%w: order %s holds no open reservation", domain.ErrUnknownReservation, order)
				return command.Decision{}, command.Reject(Code(err), err)
			}
			return dec, nil
		}})
}

// Release runs a ReleaseReservation command.
func (s *Service) Release(ctx context.Context, c Release) (command.Result, error) {
	if c.Reason == 0 || stockv1.ReleaseReason_name[int32(c.Reason)] == "" {
		return command.Result{}, invalid("reason is required")
	}
	now := s.cfg.Now()
	fp := command.Fingerprint{Kind: "ReleaseReservation", Target: c.OrderID, Input: c}
	return s.orderCommand(ctx, c.CommandID, c.OrderID, c.ReservationIDs, fp, func(st *domain.Stock, ids []string) ([]proto.Message, error) {
		return st.Release(c.OrderID, ids, c.Reason, now)
	})
}

// Commit runs a CommitReservation command.
func (s *Service) Commit(ctx context.Context, c Commit) (command.Result, error) {
	now := s.cfg.Now()
	fp := command.Fingerprint{Kind: "CommitReservation", Target: c.OrderID, Input: c}
	return s.orderCommand(ctx, c.CommandID, c.OrderID, c.ReservationIDs, fp, func(st *domain.Stock, ids []string) ([]proto.Message, error) {
		return st.Commit(c.OrderID, ids, now)
	})
}

// Expire lapses a due reservation. Its command id is derived from the
// reservation, so firing it twice is harmless.
func (s *Service) Expire(ctx context.Context, sku, reservationID string) (command.Result, error) {
	now := s.cfg.Now()
	return s.h.Execute(ctx, command.Command[*domain.Stock]{ID: "expire-" + reservationID, Streams: []string{Stream(sku)},
		Fingerprint: command.Fingerprint{Kind: "ExpireReservation", Target: reservationID, Input: sku},
		Decide:      single(sku, func(st *domain.Stock) ([]proto.Message, error) { return st.Expire(reservationID, now) })})
}

// Get folds a SKU's stream into its current state.
func (s *Service) Get(ctx context.Context, sku string) (*domain.Stock, error) {
	st, _, err := s.Read(ctx, sku)
	return st, err
}

// Read folds a SKU's stream into its current state and returns it with the
// stream's version (0: no events, an unknown SKU) and the position of its
// last event (a consistency token).
func (s *Service) Read(ctx context.Context, sku string) (*domain.Stock, View, error) {
	st := domain.New(sku)
	var v View
	for {
		evs, err := s.st.ReadStream(ctx, Stream(sku), v.Version+1, 1000)
		if err != nil {
			return nil, View{}, fmt.Errorf("load stock %s: %w", sku, err)
		}
		for _, e := range evs {
			msg, err := s.reg.Decode(e.Type, e.Payload)
			if err != nil {
				return nil, View{}, fmt.Errorf("load stock %s: %w", sku, err)
			}
			st.Apply(msg)
			v.Version, v.Position = e.Version, e.Position
		}
		if len(evs) < 1000 {
			return st, v, nil
		}
	}
}

// View says which version of a stream a read saw.
type View struct {
	Version  int64
	Position envelope.Position
}

// Close refuses new commands and waits for the accepted ones to be stored.
func (s *Service) Close() { s.h.Close() }

func (s *Service) log() *slog.Logger {
	if s.cfg.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.cfg.Logger
}

// Pool is the database the service writes to (for its adapters and tests).
func (s *Service) Pool() *pgxpool.Pool { return s.st.Pool() }
