// Package app runs the orders service's commands: load → decide → append
// through events/command, one stream per order (the stream id is the order
// id, "order-<checkout id>"), each command decided once per command id.
//
// # One checkout, one order
//
// PlaceOrder derives the order id from the checkout id (domain.OrderID), so
// every PlaceOrder for a checkout, whatever its command id, lands on the
// same stream. The command handler locks that stream before it reads it:
// the first PlaceOrder appends OrderPlaced, every later one finds the order
// placed by the same checkout and is accepted with no events (Created is
// false in its receipt). Concurrent duplicates therefore never create two
// orders and never conflict.
//
// # Refusals
//
// A domain refusal is stored with the command (command.Reject) under a
// stable code (Code*), so a retry of the same command id gets the same
// answer. A command for an order that does not exist is not a refusal: it
// fails with ErrNotFound and nothing is stored, so the same command id may
// succeed once the order is placed.
package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/command"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"github.com/keel-commerce/keel/events/store/pg"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/orders/domain"
)

// Sentinel errors of the app layer; HTTP maps them at the edge.
var (
	// ErrInvalid marks a command refused before anything was decided or
	// stored (missing command id or order id).
	ErrInvalid = errors.New("invalid command")
	// ErrNotFound reports a command or query for an order that was never
	// placed. Nothing is stored.
	ErrNotFound = errors.New("order not found")
)

// Rejection codes stored with refused commands (command.Rejection.Code).
const (
	CodeIllegalTransition = "illegal_transition"
	CodeRefundRequired    = "refund_required"
	CodeOtherCheckout     = "other_checkout"
	CodeCurrencyMismatch  = "currency_mismatch"
	CodeTotalsMismatch    = "totals_mismatch"
	CodeAmountMismatch    = "amount_mismatch"
	CodeOverflow          = "overflow"
	CodeInvalid           = "invalid"
)

// Code is the rejection code of a domain error.
func Code(err error) string {
	switch {
	case errors.Is(err, domain.ErrRefundRequired):
		return CodeRefundRequired
	case domain.IsTransition(err):
		return CodeIllegalTransition
	case errors.Is(err, domain.ErrOtherCheckout):
		return CodeOtherCheckout
	case errors.Is(err, domain.ErrCurrencyMismatch):
		return CodeCurrencyMismatch
	case errors.Is(err, domain.ErrTotalsMismatch):
		return CodeTotalsMismatch
	case errors.Is(err, domain.ErrAmountMismatch):
		return CodeAmountMismatch
	case errors.Is(err, domain.ErrOverflow):
		return CodeOverflow
	}
	return CodeInvalid
}

// Config is the service's behaviour; the zero value uses the defaults.
type Config struct {
	// Now is the clock; default time.Now. Tests inject one.
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Service executes order commands and reads orders. Safe for concurrent use.
type Service struct {
	st  *pg.Store
	reg *codec.Registry
	h   *command.Handler[*domain.Order]
	cfg Config
}

// Registry returns the orders context's payload registry.
func Registry() (*codec.Registry, error) {
	return codec.NewRegistry(ordersv1.File_keel_orders_v1_orders_proto)
}

// Aggregate wires domain.Order into the command handler.
func Aggregate() command.Aggregate[*domain.Order] {
	return command.Aggregate[*domain.Order]{New: domain.New, Apply: domain.Apply}
}

// New builds the command handler (and its tables) on st.
func New(ctx context.Context, st *pg.Store, cfg Config) (*Service, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	reg, err := Registry()
	if err != nil {
		return nil, err
	}
	h, err := command.New(ctx, st, reg, Aggregate(), command.Options{Name: "orders", Logger: cfg.Logger, Registerer: cfg.Registerer})
	if err != nil {
		return nil, err
	}
	return &Service{st: st, reg: reg, h: h, cfg: cfg}, nil
}

// Close refuses new commands and waits for the accepted ones.
func (s *Service) Close() { s.h.Close() }

// Pool is the database the service writes to (for its adapters and tests).
func (s *Service) Pool() *pgxpool.Pool { return s.st.Pool() }

// Receipt is the response of an accepted order command.
type Receipt struct {
	OrderID string `json:"order_id"`
	Status  string `json:"status"`
	// Created is true only for the PlaceOrder that placed the order.
	Created bool `json:"created,omitempty"`
}

// decide runs one command c on one order and answers a Receipt; c as
// asked, on orderID, is the command's fingerprint.
func (s *Service) decide(ctx context.Context, c proto.Message, cmdID, orderID string, mustExist bool,
	act func(o *domain.Order) ([]proto.Message, error)) (command.Result, error) {
	switch {
	case cmdID == "":
		return command.Result{}, fmt.Errorf("%w: command id is required", ErrInvalid)
	case orderID == "":
		return command.Result{}, fmt.Errorf("%w: order id is required", ErrInvalid)
	}
	fp := command.Fingerprint{Kind: string(c.ProtoReflect().Descriptor().Name()), Target: orderID, Input: c}
	return s.h.Execute(ctx, command.Command[*domain.Order]{ID: cmdID, Streams: []string{orderID}, Fingerprint: fp,
		Decide: func(states map[string]*domain.Order) (command.Decision, error) {
			o := states[orderID]
			if mustExist && o.Status() == domain.StatusNone {
				return command.Decision{}, fmt.Errorf("order %s: %w", orderID, ErrNotFound)
			}
			evs, err := act(o)
			if err != nil {
				return command.Decision{}, command.Reject(Code(err), err)
			}
			copied := *o // the state after evs, without touching o (Decide must not modify states)
			after := &copied
			for _, e := range evs {
				after = domain.Apply(after, e)
			}
			b, err := json.Marshal(Receipt{OrderID: after.ID(), Status: after.Status().String(), Created: len(evs) > 0 && o.Status() == domain.StatusNone})
			if err != nil {
				return command.Decision{}, err
			}
			return command.Decision{Events: map[string][]proto.Message{orderID: evs}, Response: b}, nil
		}})
}

// Place runs PlaceOrder. The order id is domain.OrderID(checkout id); a
// PlaceOrder for a checkout already placed is accepted without events.
func (s *Service) Place(ctx context.Context, c *ordersv1.PlaceOrder) (command.Result, error) {
	if c.GetCheckoutId() == "" {
		return command.Result{}, fmt.Errorf("%w: checkout id is required", ErrInvalid)
	}
	now := s.cfg.Now()
	return s.decide(ctx, c, c.GetCommandId(), domain.OrderID(c.GetCheckoutId()), false, func(o *domain.Order) ([]proto.Message, error) {
		return o.Place(c, now)
	})
}

// Confirm runs ConfirmOrder.
func (s *Service) Confirm(ctx context.Context, c *ordersv1.ConfirmOrder) (command.Result, error) {
	now := s.cfg.Now()
	return s.decide(ctx, c, c.GetCommandId(), c.GetOrderId(), true, func(o *domain.Order) ([]proto.Message, error) {
		return o.Confirm(now)
	})
}

// MarkPaid runs MarkOrderPaid.
func (s *Service) MarkPaid(ctx context.Context, c *ordersv1.MarkOrderPaid) (command.Result, error) {
	now := s.cfg.Now()
	return s.decide(ctx, c, c.GetCommandId(), c.GetOrderId(), true, func(o *domain.Order) ([]proto.Message, error) {
		return o.MarkPaid(c.GetPaymentId(), c.GetAmount(), now)
	})
}

// Cancel runs CancelOrder.
func (s *Service) Cancel(ctx context.Context, c *ordersv1.CancelOrder) (command.Result, error) {
	now := s.cfg.Now()
	return s.decide(ctx, c, c.GetCommandId(), c.GetOrderId(), true, func(o *domain.Order) ([]proto.Message, error) {
		return o.Cancel(c.GetReason(), c.GetDetail(), now)
	})
}

// Ship runs ShipOrder.
func (s *Service) Ship(ctx context.Context, c *ordersv1.ShipOrder) (command.Result, error) {
	now := s.cfg.Now()
	return s.decide(ctx, c, c.GetCommandId(), c.GetOrderId(), true, func(o *domain.Order) ([]proto.Message, error) {
		return o.Ship(c.GetShipmentId(), c.GetCarrier(), c.GetTrackingNumber(), now)
	})
}

// Money is an amount in minor units of an ISO 4217 currency.
type Money struct {
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
}

func money(m *typesv1.Money) *Money {
	if m == nil {
		return nil
	}
	return &Money{AmountMinor: m.GetAmountMinor(), Currency: m.GetCurrency()}
}

// Line is one line of an order as read.
type Line struct {
	SKU       string `json:"sku"`
	Name      string `json:"name,omitempty"`
	Quantity  int64  `json:"quantity"`
	UnitPrice *Money `json:"unit_price"`
	LineTotal *Money `json:"line_total"`
}

// Totals are an order's amounts.
type Totals struct {
	Subtotal *Money `json:"subtotal"`
	Shipping *Money `json:"shipping"`
	Tax      *Money `json:"tax"`
	Discount *Money `json:"discount"`
	Total    *Money `json:"total"`
}

// Customer is who placed the order.
type Customer struct {
	CustomerID string `json:"customer_id"`
	Email      string `json:"email,omitempty"`
	Name       string `json:"name,omitempty"`
}

// Address is a postal address.
type Address struct {
	Name        string `json:"name,omitempty"`
	Line1       string `json:"line1"`
	Line2       string `json:"line2,omitempty"`
	City        string `json:"city"`
	Region      string `json:"region,omitempty"`
	PostalCode  string `json:"postal_code,omitempty"`
	CountryCode string `json:"country_code"`
}

// View is an order as read from its events: what GET /orders/{id} answers.
type View struct {
	OrderID         string     `json:"order_id"`
	CheckoutID      string     `json:"checkout_id"`
	CartID          string     `json:"cart_id,omitempty"`
	Status          string     `json:"status"`
	Customer        *Customer  `json:"customer"`
	Lines           []Line     `json:"lines"`
	Totals          Totals     `json:"totals"`
	ShippingAddress *Address   `json:"shipping_address"`
	PlacedAt        time.Time  `json:"placed_at"`
	ConfirmedAt     *time.Time `json:"confirmed_at,omitempty"`
	PaymentID       string     `json:"payment_id,omitempty"`
	PaidAt          *time.Time `json:"paid_at,omitempty"`
	CancelReason    string     `json:"cancel_reason,omitempty"`
	CancelDetail    string     `json:"cancel_detail,omitempty"`
	CancelledAt     *time.Time `json:"cancelled_at,omitempty"`
	ShipmentID      string     `json:"shipment_id,omitempty"`
	Carrier         string     `json:"carrier,omitempty"`
	TrackingNumber  string     `json:"tracking_number,omitempty"`
	ShippedAt       *time.Time `json:"shipped_at,omitempty"`
	// Version is the order stream's version the view was read at.
	Version int64 `json:"version"`
}

func ptime(t time.Time) *time.Time { t = t.UTC(); return &t }

func (v *View) apply(e proto.Message) {
	switch e := e.(type) {
	case *ordersv1.OrderPlaced:
		v.OrderID, v.CheckoutID, v.CartID = e.GetOrderId(), e.GetCheckoutId(), e.GetCartId()
		v.Customer = &Customer{CustomerID: e.GetCustomer().GetCustomerId(), Email: e.GetCustomer().GetEmail(), Name: e.GetCustomer().GetName()}
		for _, l := range e.GetLines() {
			v.Lines = append(v.Lines, Line{SKU: l.GetSku(), Name: l.GetName(), Quantity: l.GetQuantity(),
				UnitPrice: money(l.GetUnitPrice()), LineTotal: money(l.GetLineTotal())})
		}
		t := e.GetTotals()
		v.Totals = Totals{Subtotal: money(t.GetSubtotal()), Shipping: money(t.GetShipping()), Tax: money(t.GetTax()),
			Discount: money(t.GetDiscount()), Total: money(t.GetTotal())}
		a := e.GetShippingAddress()
		v.ShippingAddress = &Address{Name: a.GetName(), Line1: a.GetLine1(), Line2: a.GetLine2(), City: a.GetCity(),
			Region: a.GetRegion(), PostalCode: a.GetPostalCode(), CountryCode: a.GetCountryCode()}
		v.PlacedAt = e.GetPlacedAt().AsTime().UTC()
	case *ordersv1.OrderConfirmed:
		v.ConfirmedAt = ptime(e.GetConfirmedAt().AsTime())
	case *ordersv1.OrderPaid:
		v.PaymentID, v.PaidAt = e.GetPaymentId(), ptime(e.GetPaidAt().AsTime())
	case *ordersv1.OrderCancelled:
		v.CancelReason, v.CancelDetail, v.CancelledAt = codec.EnumName(e.GetReason()), e.GetDetail(), ptime(e.GetCancelledAt().AsTime())
	case *ordersv1.OrderShipped:
		v.ShipmentID, v.Carrier, v.TrackingNumber = e.GetShipmentId(), e.GetCarrier(), e.GetTrackingNumber()
		v.ShippedAt = ptime(e.GetShippedAt().AsTime())
	}
}

// Get reads order id from its stream; ErrNotFound if it was never placed.
// It reads committed events, so it may lag a command still running.
func (s *Service) Get(ctx context.Context, id string) (*View, error) {
	o := domain.New(id)
	v := &View{}
	var from int64 = 1
	for {
		evs, err := s.st.ReadStream(ctx, id, from, 1000)
		if err != nil {
			return nil, fmt.Errorf("load order %s: %w", id, err)
		}
		for _, e := range evs {
			msg, err := s.reg.Decode(e.Type, e.Payload)
			if err != nil {
				return nil, fmt.Errorf("load order %s: %w", id, err)
			}
			o = domain.Apply(o, msg)
			v.apply(msg)
			v.Version = e.Version
			from = e.Version + 1
		}
		if len(evs) < 1000 {
			break
		}
	}
	if o.Status() == domain.StatusNone {
		return nil, fmt.Errorf("order %s: %w", id, ErrNotFound)
	}
	v.Status = o.Status().String()
	return v, nil
}
