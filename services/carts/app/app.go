// Package app runs the carts service's commands: load → decide → append
// through events/command, one stream per cart ("cart-<id>"), each command
// decided once per command id.
//
// # Prices
//
// AddLine prices a line from the catalog through the Catalog port before
// the command runs; an unknown or delisted SKU is refused before anything
// is decided or stored. The price is read once, outside the cart's
// transaction: a price change racing an add is a race the customer could
// equally have lost by clicking a second later, and the cart keeps the
// price it saw (the line stores its unit price).
//
// # Abandonment
//
// An open cart is abandoned after AbandonAfter without activity by a
// durable timer: every accepted command writes its cart's cart_timers row
// (due = last activity + AbandonAfter, with the cart's version) in the
// command's own transaction (Decision.Writes), and deletes it when the cart
// leaves the open state (checkout, abandon, close). So the row can never
// disagree with the events. Timers.FireDue runs Abandon for due rows with
// command id "abandon-<cart>-<version>": firing twice, from two replicas or
// after a crash, decides once.
package app

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/migrate"
	"github.com/keel-commerce/keel/events/store/pg"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/carts/domain"
	"github.com/keel-commerce/keel/services/kit/timers"
)

// StreamPrefix starts every cart stream's id.
const StreamPrefix = "cart-"

// Stream is the stream id of a cart.
func Stream(cartID string) string { return StreamPrefix + cartID }

// Errors returned before anything is decided or stored.
var (
	// ErrInvalid marks a command with missing or malformed fields (HTTP 422).
	ErrInvalid = errors.New("invalid command")
	// ErrUnknownSKU reports a SKU the catalog does not sell (HTTP 422).
	ErrUnknownSKU = errors.New("unknown sku")
	// ErrNotFound reports a cart that does not exist (HTTP 404).
	ErrNotFound = errors.New("unknown cart")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Rejection codes stored with refused commands (command.Rejection.Code).
const (
	CodeUnknownCart       = "unknown_cart"
	CodeCartExists        = "cart_exists"
	CodeCartFrozen        = "cart_frozen"
	CodeIllegalTransition = "illegal_transition"
	CodeCurrencyMismatch  = "currency_mismatch"
	CodeTooManyLines      = "too_many_lines"
	CodeQuantity          = "invalid_quantity"
	CodeNoSuchLine        = "no_such_line"
	CodeEmpty             = "cart_empty"
	CodeVersionMismatch   = "version_mismatch"
	CodeOtherCheckout     = "other_checkout"
	CodeOverflow          = "amount_overflow"
	CodeInvalid           = "invalid"
)

// Code is the rejection code of a domain error.
func Code(err error) string {
	var t *domain.TransitionError
	switch {
	case errors.As(err, &t):
		switch {
		case t.From == domain.StatusNone:
			return CodeUnknownCart
		case t.Action == "create":
			return CodeCartExists
		case t.From == domain.StatusCheckingOut:
			return CodeCartFrozen
		}
		return CodeIllegalTransition
	case errors.Is(err, domain.ErrCurrencyMismatch):
		return CodeCurrencyMismatch
	case errors.Is(err, domain.ErrTooManyLines):
		return CodeTooManyLines
	case errors.Is(err, domain.ErrQuantity):
		return CodeQuantity
	case errors.Is(err, domain.ErrNoSuchLine):
		return CodeNoSuchLine
	case errors.Is(err, domain.ErrEmpty):
		return CodeEmpty
	case errors.Is(err, domain.ErrVersionMismatch):
		return CodeVersionMismatch
	case errors.Is(err, domain.ErrOtherCheckout):
		return CodeOtherCheckout
	case errors.Is(err, domain.ErrOverflow):
		return CodeOverflow
	}
	return CodeInvalid
}

// Catalog is the price source: Product returns a listed SKU's name and
// unit price, or an error wrapping ErrUnknownSKU. Implementations must be
// safe for concurrent use.
type Catalog interface {
	Product(ctx context.Context, sku string) (domain.Product, error)
}

// Config is the service's behaviour; the zero value uses the defaults.
type Config struct {
	// AbandonAfter is the inactivity after which an open cart is
	// abandoned; default domain.DefaultIdleTimeout (24h).
	AbandonAfter time.Duration
	// Now is the clock; default time.Now. Tests inject one.
	Now func() time.Time
	// NewID names carts and checkouts when the caller does not; default a KSUID.
	NewID      func() string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Service executes cart commands. Safe for concurrent use.
type Service struct {
	st  *pg.Store
	reg *codec.Registry
	h   *command.Handler[*domain.Cart]
	cat Catalog
	cfg Config

	timers *timers.Queue
}

// Registry returns the carts context's payload registry.
func Registry() (*codec.Registry, error) {
	return codec.NewRegistry(cartsv1.File_keel_carts_v1_carts_proto)
}

// Aggregate wires domain.Cart into the command handler.
func Aggregate() command.Aggregate[*domain.Cart] {
	return command.Aggregate[*domain.Cart]{New: domain.New, Apply: domain.Apply}
}

// VersionTable is the goose version table of the service's migrations
// (cart_timers), so they evolve apart from the event store's.
const VersionTable = "goose_carts_version"

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates or upgrades the service's tables; replicas starting
// together are serialized by migrate's session lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrate.UpDir(ctx, pool, migrations, "migrations", VersionTable)
}

// New migrates the service's table and creates its command handler and
// abandon timers on st; cat prices lines.
func New(ctx context.Context, st *pg.Store, cat Catalog, cfg Config) (*Service, error) {
	if cat == nil {
		return nil, errors.New("carts: a catalog is required")
	}
	if cfg.AbandonAfter < 0 {
		return nil, fmt.Errorf("carts config: AbandonAfter %s must be positive", cfg.AbandonAfter)
	}
	if cfg.AbandonAfter == 0 {
		cfg.AbandonAfter = domain.DefaultIdleTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewID == nil {
		cfg.NewID = func() string { return ksuid.New().String() }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	reg, err := Registry()
	if err != nil {
		return nil, err
	}
	if err := Migrate(ctx, st.Pool()); err != nil {
		return nil, err
	}
	h, err := command.New(ctx, st, reg, Aggregate(), command.Options{Name: "carts", Logger: cfg.Logger, Registerer: cfg.Registerer})
	if err != nil {
		return nil, err
	}
	s := &Service{st: st, reg: reg, h: h, cat: cat, cfg: cfg}
	if s.timers, err = s.newTimers(); err != nil {
		return nil, err
	}
	return s, nil
}

// Close refuses new commands and waits for the accepted ones.
func (s *Service) Close() { s.h.Close() }

// Pool is the carts database.
func (s *Service) Pool() *pgxpool.Pool { return s.st.Pool() }

// NewID returns a fresh id from the configured generator.
func (s *Service) NewID() string { return s.cfg.NewID() }

// Money is an amount in minor units of an ISO 4217 currency.
type Money struct {
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
}

// LineView is one line of a cart as the API shows it.
type LineView struct {
	SKU       string `json:"sku"`
	Name      string `json:"name"`
	Quantity  int64  `json:"quantity"`
	UnitPrice Money  `json:"unit_price"`
	LineTotal Money  `json:"line_total"`
}

// View is a cart as the API shows it.
type View struct {
	CartID         string     `json:"cart_id"`
	CustomerID     string     `json:"customer_id,omitempty"`
	Currency       string     `json:"currency"`
	Status         string     `json:"status"`
	Version        int64      `json:"version"`
	CheckoutID     string     `json:"checkout_id,omitempty"`
	Lines          []LineView `json:"lines"`
	Subtotal       Money      `json:"subtotal"`
	LastActivityAt time.Time  `json:"last_activity_at"`
}

// statusName is the API's name of a status (snake case, stable).
func statusName(s domain.Status) string {
	switch s {
	case domain.StatusOpen:
		return "open"
	case domain.StatusCheckingOut:
		return "checking_out"
	case domain.StatusAbandoned:
		return "abandoned"
	case domain.StatusClosed:
		return "closed"
	}
	return "none"
}

// ViewOf shows c.
func ViewOf(c *domain.Cart) View {
	v := View{CartID: c.ID(), CustomerID: c.CustomerID(), Currency: c.Currency(), Status: statusName(c.Status()),
		Version: c.Version(), CheckoutID: c.CheckoutID(), Lines: []LineView{}, LastActivityAt: c.LastActivity().UTC()}
	v.Subtotal.Currency = c.Currency()
	for _, l := range c.Lines() {
		total := l.UnitPrice * l.Quantity // bounded by the domain
		v.Lines = append(v.Lines, LineView{SKU: l.SKU, Name: l.Name, Quantity: l.Quantity,
			UnitPrice: Money{l.UnitPrice, c.Currency()}, LineTotal: Money{total, c.Currency()}})
		v.Subtotal.AmountMinor += total
	}
	return v
}

// execute decides on cartID's cart and answers with the cart's view after
// the command; an accepted change also keeps the cart's timer row. fp is
// the command as asked (see command.Fingerprint).
func (s *Service) execute(ctx context.Context, id, cartID string, fp command.Fingerprint, decide func(c *domain.Cart) ([]proto.Message, error)) (command.Result, error) {
	switch {
	case id == "":
		return command.Result{}, invalid("command id is required")
	case cartID == "":
		return command.Result{}, invalid("cart id is required")
	}
	stream := Stream(cartID)
	return s.h.Execute(ctx, command.Command[*domain.Cart]{ID: id, Streams: []string{stream},
		Fingerprint: fp,
		Decide: func(states map[string]*domain.Cart) (command.Decision, error) {
			c := states[stream]
			evs, err := decide(c)
			if errors.Is(err, domain.ErrNotIdle) {
				return command.Decision{}, err // not stored: the timer reschedules
			}
			if err != nil {
				return command.Decision{}, command.Reject(Code(err), err)
			}
			next := c.Clone()
			for _, e := range evs {
				domain.Apply(next, e)
			}
			resp, err := json.Marshal(ViewOf(next))
			if err != nil {
				return command.Decision{}, err
			}
			dec := command.Decision{Events: map[string][]proto.Message{stream: evs}, Response: resp}
			if len(evs) > 0 {
				dec.Writes = s.timerWrite(next)
			}
			return dec, nil
		}})
}

// timerWrite keeps c's cart_timers row: due AbandonAfter after its last
// activity while it is open, gone otherwise.
func (s *Service) timerWrite(c *domain.Cart) func(context.Context, pgx.Tx) error {
	id, open, version := c.ID(), c.Status() == domain.StatusOpen, c.Version()
	due := c.LastActivity().Add(s.cfg.AbandonAfter)
	return func(ctx context.Context, tx pgx.Tx) error {
		var err error
		if open {
			_, err = tx.Exec(ctx, `INSERT INTO cart_timers (cart_id, due_at, version) VALUES ($1, $2, $3)
ON CONFLICT (cart_id) DO UPDATE SET due_at = EXCLUDED.due_at, version = EXCLUDED.version,
  attempts = 0, retry_at = NULL, last_error = NULL`, id, due, version)
		} else {
			_, err = tx.Exec(ctx, `DELETE FROM cart_timers WHERE cart_id = $1`, id)
		}
		if err != nil {
			return fmt.Errorf("cart timer %s: %w", id, err)
		}
		return nil
	}
}

// Create opens a cart.
type Create struct {
	CommandID string
	// CartID names the cart; generated when empty (a retry under the same
	// command id then answers the cart the first attempt created).
	CartID               string
	CustomerID, Currency string
}

// AddLine adds quantity units of a SKU, priced from the catalog.
type AddLine struct {
	CommandID, CartID, SKU string
	Quantity               int64
}

// ChangeQuantity sets a line's quantity.
type ChangeQuantity struct {
	CommandID, CartID, SKU string
	Quantity               int64
}

// RemoveLine drops a line.
type RemoveLine struct {
	CommandID, CartID, SKU string
}

// Clear drops every line.
type Clear struct {
	CommandID, CartID string
}

// RequestCheckout freezes the cart for a checkout.
type RequestCheckout struct {
	CommandID, CartID string
	// CheckoutID names the checkout; generated when empty.
	CheckoutID string
	// ExpectedVersion, when non-zero, must be the cart's version.
	ExpectedVersion int64
	Customer        *typesv1.Customer
	ShippingAddress *typesv1.Address
	PaymentMethod   *typesv1.PaymentMethod
}

// Reopen unfreezes a cart whose checkout failed, or revives an abandoned one.
type Reopen struct {
	CommandID, CartID, CheckoutID, Reason string
}

// Close ends a cart whose checkout became an order.
type Close struct {
	CommandID, CartID, CheckoutID, OrderID string
}

func checkQuantity(q int64) error {
	if q < 1 || q > domain.MaxQuantity {
		return invalid("quantity must be in 1..%d", domain.MaxQuantity)
	}
	return nil
}

// Create runs a CreateCart command.
func (s *Service) Create(ctx context.Context, c Create) (command.Result, error) {
	if len(c.Currency) != 3 {
		return command.Result{}, invalid("currency must be a 3-letter ISO 4217 code")
	}
	// The fingerprint is the command as asked: a new cart of no given id
	// is one command however many ids its retries would generate.
	target, cartID := c.CartID, c.CartID
	if cartID == "" {
		target, cartID = "a new cart", s.cfg.NewID()
	}
	now := s.cfg.Now()
	return s.execute(ctx, c.CommandID, cartID, command.Fingerprint{Kind: "CreateCart", Target: target, Input: c}, func(cart *domain.Cart) ([]proto.Message, error) {
		return cart.Create(cartID, c.CustomerID, c.Currency, now)
	})
}

// AddLine runs an AddLine command.
func (s *Service) AddLine(ctx context.Context, c AddLine) (command.Result, error) {
	if c.SKU == "" {
		return command.Result{}, invalid("sku is required")
	}
	if err := checkQuantity(c.Quantity); err != nil {
		return command.Result{}, err
	}
	p, err := s.cat.Product(ctx, c.SKU)
	if err != nil {
		return command.Result{}, fmt.Errorf("price %s: %w", c.SKU, err)
	}
	now := s.cfg.Now()
	return s.execute(ctx, c.CommandID, c.CartID, command.Fingerprint{Kind: "AddLine", Target: c.CartID, Input: c}, func(cart *domain.Cart) ([]proto.Message, error) {
		return cart.AddLine(p, c.Quantity, now)
	})
}

// ChangeQuantity runs a ChangeLineQuantity command.
func (s *Service) ChangeQuantity(ctx context.Context, c ChangeQuantity) (command.Result, error) {
	if c.SKU == "" {
		return command.Result{}, invalid("sku is required")
	}
	if err := checkQuantity(c.Quantity); err != nil {
		return command.Result{}, err
	}
	now := s.cfg.Now()
	return s.execute(ctx, c.CommandID, c.CartID, command.Fingerprint{Kind: "ChangeLineQuantity", Target: c.CartID, Input: c}, func(cart *domain.Cart) ([]proto.Message, error) {
		return cart.ChangeQuantity(c.SKU, c.Quantity, now)
	})
}

// RemoveLine runs a RemoveLine command.
func (s *Service) RemoveLine(ctx context.Context, c RemoveLine) (command.Result, error) {
	if c.SKU == "" {
		return command.Result{}, invalid("sku is required")
	}
	now := s.cfg.Now()
	return s.execute(ctx, c.CommandID, c.CartID, command.Fingerprint{Kind: "RemoveLine", Target: c.CartID, Input: c}, func(cart *domain.Cart) ([]proto.Message, error) {
		return cart.RemoveLine(c.SKU, now)
	})
}

// Clear runs a ClearCart command.
func (s *Service) Clear(ctx context.Context, c Clear) (command.Result, error) {
	now := s.cfg.Now()
	return s.execute(ctx, c.CommandID, c.CartID, command.Fingerprint{Kind: "ClearCart", Target: c.CartID, Input: c}, func(cart *domain.Cart) ([]proto.Message, error) {
		return cart.Clear(now)
	})
}

// RequestCheckout runs a RequestCheckout command: CheckoutRequested carries
// the frozen lines, totals, customer, shipping address and payment method.
func (s *Service) RequestCheckout(ctx context.Context, c RequestCheckout) (command.Result, error) {
	switch {
	case c.Customer == nil:
		return command.Result{}, invalid("customer is required")
	case c.ShippingAddress == nil:
		return command.Result{}, invalid("shipping_address is required")
	case c.PaymentMethod == nil || c.PaymentMethod.GetKind() == typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_UNSPECIFIED:
		return command.Result{}, invalid("payment_method with a kind is required")
	case c.ExpectedVersion < 0:
		return command.Result{}, invalid("expected_version must not be negative")
	}
	checkoutID := c.CheckoutID
	if checkoutID == "" {
		checkoutID = s.cfg.NewID()
	}
	now := s.cfg.Now()
	cmd := &cartsv1.RequestCheckout{CommandId: c.CommandID, CartId: c.CartID, ExpectedVersion: c.ExpectedVersion,
		Customer: c.Customer, ShippingAddress: c.ShippingAddress, PaymentMethod: c.PaymentMethod}
	return s.execute(ctx, c.CommandID, c.CartID, command.Fingerprint{Kind: "RequestCheckout", Target: c.CartID, Input: c}, func(cart *domain.Cart) ([]proto.Message, error) {
		return cart.RequestCheckout(cmd, checkoutID, now)
	})
}

// Reopen runs a ReopenCart command.
func (s *Service) Reopen(ctx context.Context, c Reopen) (command.Result, error) {
	now := s.cfg.Now()
	return s.execute(ctx, c.CommandID, c.CartID, command.Fingerprint{Kind: "ReopenCart", Target: c.CartID, Input: c}, func(cart *domain.Cart) ([]proto.Message, error) {
		return cart.Reopen(c.CheckoutID, c.Reason, now)
	})
}

// CloseCart runs a CloseCart command (Close is taken by the service's own shutdown).
func (s *Service) CloseCart(ctx context.Context, c Close) (command.Result, error) {
	if c.OrderID == "" || c.CheckoutID == "" {
		return command.Result{}, invalid("checkout id and order id are required")
	}
	now := s.cfg.Now()
	return s.execute(ctx, c.CommandID, c.CartID, command.Fingerprint{Kind: "CloseCart", Target: c.CartID, Input: c}, func(cart *domain.Cart) ([]proto.Message, error) {
		return cart.Close(c.CheckoutID, c.OrderID, now)
	})
}

// AbandonCommandID is the id of the idle abandon of cartID at version:
// the timer may fire it any number of times, it is decided once.
func AbandonCommandID(cartID string, version int64) string {
	return fmt.Sprintf("abandon-%s-%d", cartID, version)
}

// Abandon abandons an idle cart at version. A cart not idle long enough
// yields domain.ErrNotIdle and nothing is stored, so the same id may fire
// again later.
func (s *Service) Abandon(ctx context.Context, cartID string, version int64) (command.Result, error) {
	now := s.cfg.Now()
	return s.execute(ctx, AbandonCommandID(cartID, version), cartID, command.Fingerprint{Kind: "AbandonCart", Target: cartID, Input: version}, func(cart *domain.Cart) ([]proto.Message, error) {
		return cart.Abandon(cartsv1.AbandonReason_ABANDON_REASON_IDLE, s.cfg.AbandonAfter, now)
	})
}

// Get folds a cart's stream into its view, or ErrNotFound.
func (s *Service) Get(ctx context.Context, cartID string) (View, error) {
	c, err := s.load(ctx, cartID)
	if err != nil {
		return View{}, err
	}
	return ViewOf(c), nil
}

func (s *Service) load(ctx context.Context, cartID string) (*domain.Cart, error) {
	c := domain.New(cartID)
	var from int64 = 1
	for {
		evs, err := s.st.ReadStream(ctx, Stream(cartID), from, 1000)
		if err != nil {
			return nil, fmt.Errorf("load cart %s: %w", cartID, err)
		}
		for _, e := range evs {
			msg, err := s.reg.Decode(e.Type, e.Payload)
			if err != nil {
				return nil, fmt.Errorf("load cart %s: %w", cartID, err)
			}
			domain.Apply(c, msg)
			from = e.Version + 1
		}
		if len(evs) < 1000 {
			break
		}
	}
	if c.Status() == domain.StatusNone {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, cartID)
	}
	return c, nil
}
