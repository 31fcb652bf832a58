// Package domain holds the stock aggregate: one per SKU, with the on-hand
// units of every warehouse and the open reservations against them. It does
// no I/O: command methods check invariants and return events, Apply is the
// only place state changes, and time and ids are passed in.
//
// Invariant: in every warehouse, reserved ≤ on hand. Committing a
// reservation takes its units off on hand at the same moment, so committed
// units never linger beside the reservations.
package domain

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
)

// Sentinel errors of the stock domain. Callers compare with errors.Is.
var (
	ErrInvalidQuantity    = errors.New("quantity must be positive")
	ErrInvalidSKU         = errors.New("sku is required")
	ErrInvalidWarehouse   = errors.New("warehouse is required")
	ErrInvalidOrder       = errors.New("order id is required")
	ErrInvalidReason      = errors.New("reason is required")
	ErrInvalidTTL         = errors.New("time to live must be positive")
	ErrInsufficientStock  = errors.New("insufficient stock")
	ErrBelowReserved      = errors.New("adjustment would take on hand below reserved")
	ErrUnknownReservation = errors.New("unknown reservation")
	ErrAlreadyReserved    = errors.New("order already holds a reservation for this sku")
	ErrNotDue             = errors.New("reservation is not due to expire")
	ErrTooMany            = errors.New("on hand would exceed the largest count a SKU holds")
)

// InsufficientStockError says how much was asked and how much was free. It
// matches ErrInsufficientStock with errors.Is.
type InsufficientStockError struct {
	SKU                  string
	Requested, Available int64
}

func (e *InsufficientStockError) Error() string {
	return fmt.Sprintf("insufficient stock of %s: requested %d, available %d", e.SKU, e.Requested, e.Available)
}

// Is makes errors.Is(err, ErrInsufficientStock) true.
func (e *InsufficientStockError) Is(target error) bool { return target == ErrInsufficientStock }

// ShortageError is a failed allocation's shortages as an error; it matches
// ErrInsufficientStock with errors.Is. Its text names every short line as
// InsufficientStockError does.
type ShortageError []*stockv1.Shortage

func (e ShortageError) Error() string {
	parts := make([]string, len(e))
	for i, s := range e {
		parts[i] = (&InsufficientStockError{SKU: s.GetSku(), Requested: s.GetRequested(), Available: s.GetAvailable()}).Error()
	}
	return strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrInsufficientStock) true.
func (e ShortageError) Is(target error) bool { return target == ErrInsufficientStock }

// Warehouse is one warehouse's units of the SKU.
type Warehouse struct {
	OnHand   int64
	Reserved int64
}

// Available is what can still be reserved.
func (w Warehouse) Available() int64 { return w.OnHand - w.Reserved }

// Reservation is units held for an order in one warehouse until ExpiresAt.
type Reservation struct {
	ID         string
	Warehouse  string
	Quantity   int64
	Order      string
	ExpiresAt  time.Time
	CheckoutID string
	ReservedAt time.Time
}

// Stock is the aggregate of one SKU. The zero value is not usable; use New.
// It is not safe for concurrent use: the command handler serializes it.
type Stock struct {
	sku          string
	warehouses   map[string]*Warehouse
	reservations map[string]Reservation
	// byOrder counts each order's open reservations, so Reserve's
	// one-reservation-per-order check does not scan every reservation of a
	// hot SKU.
	byOrder map[string]int
}

// New returns the state of a SKU with no events.
func New(sku string) *Stock {
	return &Stock{sku: sku, warehouses: map[string]*Warehouse{}, reservations: map[string]Reservation{}, byOrder: map[string]int{}}
}

// SKU is the aggregate's stock keeping unit.
func (s *Stock) SKU() string { return s.sku }

// Warehouses returns a copy of every warehouse's counts.
func (s *Stock) Warehouses() map[string]Warehouse {
	out := make(map[string]Warehouse, len(s.warehouses))
	for id, w := range s.warehouses {
		out[id] = *w
	}
	return out
}

// Reservations returns the open reservations, ordered by id.
func (s *Stock) Reservations() []Reservation {
	out := make([]Reservation, 0, len(s.reservations))
	for _, r := range s.reservations {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Reservation) int { return compare(a.ID, b.ID) })
	return out
}

// Reservation returns an open reservation by id.
func (s *Stock) Reservation(id string) (Reservation, bool) {
	r, ok := s.reservations[id]
	return r, ok
}

// Available is the units free to reserve across all warehouses.
func (s *Stock) Available() int64 {
	var n int64
	for _, w := range s.warehouses {
		n += w.Available()
	}
	return n
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Receive books qty units into a warehouse.
func (s *Stock) Receive(warehouse string, qty int64, reference string, now time.Time) ([]proto.Message, error) {
	if warehouse == "" {
		return nil, ErrInvalidWarehouse
	}
	if qty <= 0 {
		return nil, ErrInvalidQuantity
	}
	if err := s.fits(warehouse, qty); err != nil {
		return nil, err
	}
	return []proto.Message{&stockv1.StockReceived{Sku: s.sku, WarehouseId: warehouse, Quantity: qty,
		Reference: reference, ReceivedAt: timestamppb.New(now)}}, nil
}

// Adjust corrects a warehouse's on-hand units by delta (≠ 0). It cannot
// take on hand below what is reserved there.
func (s *Stock) Adjust(warehouse string, delta int64, reason stockv1.AdjustmentReason, note string, now time.Time) ([]proto.Message, error) {
	if warehouse == "" {
		return nil, ErrInvalidWarehouse
	}
	if delta == 0 {
		return nil, ErrInvalidQuantity
	}
	if reason == stockv1.AdjustmentReason_ADJUSTMENT_REASON_UNSPECIFIED || stockv1.AdjustmentReason_name[int32(reason)] == "" {
		return nil, ErrInvalidReason
	}
	var w Warehouse
	if p := s.warehouses[warehouse]; p != nil {
		w = *p
	}
	if delta > 0 {
		if err := s.fits(warehouse, delta); err != nil {
			return nil, err
		}
	}
	if w.OnHand+delta < w.Reserved {
		return nil, fmt.Errorf("%w: %s has %d on hand, %d reserved, delta %d", ErrBelowReserved, warehouse, w.OnHand, w.Reserved, delta)
	}
	return []proto.Message{&stockv1.StockAdjusted{Sku: s.sku, WarehouseId: warehouse, Delta: delta,
		Reason: reason, Note: note, AdjustedAt: timestamppb.New(now)}}, nil
}

// ReserveRequest asks to reserve Quantity units for Order for TTL.
type ReserveRequest struct {
	Order      string
	CheckoutID string
	Quantity   int64
	TTL        time.Duration
	// Priority lists warehouses in the order they are drawn from; the
	// warehouses it does not name follow, by id.
	Priority []string
}

// Reserve allocates the units across warehouses, all or nothing: the first
// warehouse by priority that holds the whole quantity, else a split in
// priority order. newID names each reservation (one per warehouse used).
func (s *Stock) Reserve(req ReserveRequest, now time.Time, newID func() string) ([]proto.Message, error) {
	switch {
	case req.Order == "":
		return nil, ErrInvalidOrder
	case req.Quantity <= 0:
		return nil, ErrInvalidQuantity
	case req.TTL <= 0:
		return nil, ErrInvalidTTL
	}
	if s.byOrder[req.Order] > 0 {
		return nil, fmt.Errorf("%w: order %s, sku %s", ErrAlreadyReserved, req.Order, s.sku)
	}
	if avail := s.Available(); avail < req.Quantity {
		return nil, &InsufficientStockError{SKU: s.sku, Requested: req.Quantity, Available: avail}
	}
	order := s.priority(req.Priority)
	type part struct {
		wh  string
		qty int64
	}
	var parts []part
	for _, wh := range order {
		if s.warehouses[wh].Available() >= req.Quantity {
			parts = []part{{wh, req.Quantity}}
			break
		}
	}
	if parts == nil {
		left := req.Quantity
		for _, wh := range order {
			if n := min(left, s.warehouses[wh].Available()); n > 0 {
				parts = append(parts, part{wh, n})
				left -= n
			}
		}
	}
	exp := timestamppb.New(now.Add(req.TTL))
	evs := make([]proto.Message, 0, len(parts))
	for _, p := range parts {
		evs = append(evs, &stockv1.StockReserved{ReservationId: newID(), Sku: s.sku, WarehouseId: p.wh,
			Quantity: p.qty, OrderId: req.Order, CheckoutId: req.CheckoutID, ExpiresAt: exp, ReservedAt: timestamppb.New(now)})
	}
	return evs, nil
}

// OrderLine is a quantity of one SKU an order asks for.
type OrderLine struct {
	SKU      string
	Quantity int64
}

// AllocateRequest asks to reserve every line of an order, each on its SKU's
// stock, for TTL. Each SKU appears at most once.
type AllocateRequest struct {
	Order      string
	CheckoutID string
	Lines      []OrderLine
	TTL        time.Duration
	// Priority is the warehouse order of ReserveRequest.Priority.
	Priority []string
}

// Allocation is what Allocate decided: either the StockReserved events of
// every line, by SKU, or (Reserved empty) Failed, naming every line that
// could not be served.
type Allocation struct {
	Reserved map[string][]proto.Message
	Failed   *stockv1.AllocationFailed
}

// Allocate reserves an order's lines across SKUs and warehouses, all or
// nothing. stock returns the current state of a SKU. When some lines lack
// stock, nothing is reserved and the allocation fails with one shortage per
// short line (what was free across all warehouses): a fact to record, so
// whoever asked learns it at once. Other refusals (invalid request, a line
// the order already holds) are errors and record nothing.
func Allocate(req AllocateRequest, stock func(sku string) *Stock, now time.Time, newID func() string) (Allocation, error) {
	if len(req.Lines) == 0 {
		return Allocation{}, fmt.Errorf("%w: an order needs lines", ErrInvalidQuantity)
	}
	reserved := make(map[string][]proto.Message, len(req.Lines))
	var short []*stockv1.Shortage
	for _, l := range req.Lines {
		if l.SKU == "" {
			return Allocation{}, ErrInvalidSKU
		}
		if _, dup := reserved[l.SKU]; dup {
			return Allocation{}, fmt.Errorf("%w: sku %s appears twice", ErrInvalidSKU, l.SKU)
		}
		evs, err := stock(l.SKU).Reserve(ReserveRequest{Order: req.Order, CheckoutID: req.CheckoutID, Quantity: l.Quantity,
			TTL: req.TTL, Priority: req.Priority}, now, newID)
		var ins *InsufficientStockError
		switch {
		case errors.As(err, &ins):
			short = append(short, &stockv1.Shortage{Sku: ins.SKU, Requested: ins.Requested, Available: ins.Available})
			evs = nil
		case err != nil:
			return Allocation{}, err
		}
		reserved[l.SKU] = evs
	}
	if len(short) > 0 {
		return Allocation{Failed: &stockv1.AllocationFailed{OrderId: req.Order, CheckoutId: req.CheckoutID,
			Shortages: short, FailedAt: timestamppb.New(now)}}, nil
	}
	return Allocation{Reserved: reserved}, nil
}

func (s *Stock) priority(pref []string) []string {
	out := make([]string, 0, len(s.warehouses))
	for _, wh := range pref {
		if _, ok := s.warehouses[wh]; ok && !slices.Contains(out, wh) {
			out = append(out, wh)
		}
	}
	var rest []string
	for wh := range s.warehouses {
		if !slices.Contains(out, wh) {
			rest = append(rest, wh)
		}
	}
	slices.Sort(rest)
	return append(out, rest...)
}

// OrderReservations returns the open reservations of order, filtered by ids
// when ids is not empty. An id that is not open, or not the order's, is
// ErrUnknownReservation; so is an order with none.
func (s *Stock) OrderReservations(order string, ids []string) ([]Reservation, error) {
	if order == "" {
		return nil, ErrInvalidOrder
	}
	var out []Reservation
	if len(ids) > 0 {
		for _, id := range ids {
			r, ok := s.reservations[id]
			if !ok || r.Order != order {
				return nil, fmt.Errorf("%w: %s of order %s", ErrUnknownReservation, id, order)
			}
			out = append(out, r)
		}
		return out, nil
	}
	for _, r := range s.Reservations() {
		if r.Order == order {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: order %s holds none of %s", ErrUnknownReservation, order, s.sku)
	}
	return out, nil
}

// Release gives back the order's reservations (all of them when ids is empty).
func (s *Stock) Release(order string, ids []string, reason stockv1.ReleaseReason, now time.Time) ([]proto.Message, error) {
	if reason == stockv1.ReleaseReason_RELEASE_REASON_UNSPECIFIED || stockv1.ReleaseReason_name[int32(reason)] == "" {
		return nil, ErrInvalidReason
	}
	rs, err := s.OrderReservations(order, ids)
	if err != nil {
		return nil, err
	}
	evs := make([]proto.Message, 0, len(rs))
	for _, r := range rs {
		evs = append(evs, &stockv1.ReservationReleased{ReservationId: r.ID, Sku: s.sku, WarehouseId: r.Warehouse,
			Quantity: r.Quantity, OrderId: r.Order, Reason: reason, ReleasedAt: timestamppb.New(now)})
	}
	return evs, nil
}

// Commit takes the order's reserved units (all of them when ids is empty)
// off on hand: the order is confirmed and the units leave the warehouse.
func (s *Stock) Commit(order string, ids []string, now time.Time) ([]proto.Message, error) {
	rs, err := s.OrderReservations(order, ids)
	if err != nil {
		return nil, err
	}
	evs := make([]proto.Message, 0, len(rs))
	for _, r := range rs {
		evs = append(evs, &stockv1.ReservationCommitted{ReservationId: r.ID, Sku: s.sku, WarehouseId: r.Warehouse,
			Quantity: r.Quantity, OrderId: r.Order, CommittedAt: timestamppb.New(now)})
	}
	return evs, nil
}

// Expire lapses a reservation whose expiry time is at or before now.
func (s *Stock) Expire(id string, now time.Time) ([]proto.Message, error) {
	r, ok := s.reservations[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownReservation, id)
	}
	if now.Before(r.ExpiresAt) {
		return nil, fmt.Errorf("%w: %s expires at %s", ErrNotDue, id, r.ExpiresAt.Format(time.RFC3339Nano))
	}
	return []proto.Message{&stockv1.ReservationExpired{ReservationId: id, Sku: s.sku, WarehouseId: r.Warehouse,
		Quantity: r.Quantity, OrderId: r.Order, ExpiredAt: timestamppb.New(r.ExpiresAt)}}, nil
}

// Apply folds one event into the state. Events are facts: it never fails,
// and it ignores events of other types or other SKUs' streams.
func (s *Stock) Apply(event proto.Message) {
	switch e := event.(type) {
	case *stockv1.StockReceived:
		s.warehouse(e.GetWarehouseId()).OnHand += e.GetQuantity()
	case *stockv1.StockAdjusted:
		s.warehouse(e.GetWarehouseId()).OnHand += e.GetDelta()
	case *stockv1.StockReserved:
		s.warehouse(e.GetWarehouseId()).Reserved += e.GetQuantity()
		s.reservations[e.GetReservationId()] = Reservation{ID: e.GetReservationId(), Warehouse: e.GetWarehouseId(),
			Quantity: e.GetQuantity(), Order: e.GetOrderId(), CheckoutID: e.GetCheckoutId(),
			ExpiresAt: e.GetExpiresAt().AsTime(), ReservedAt: e.GetReservedAt().AsTime()}
		s.byOrder[e.GetOrderId()]++
	case *stockv1.ReservationReleased:
		s.unreserve(e.GetReservationId())
	case *stockv1.ReservationExpired:
		s.unreserve(e.GetReservationId())
	case *stockv1.ReservationCommitted:
		if r, ok := s.reservations[e.GetReservationId()]; ok {
			s.unreserve(r.ID)
			s.warehouse(r.Warehouse).OnHand -= r.Quantity
		}
	}
}

func (s *Stock) unreserve(id string) {
	r, ok := s.reservations[id]
	if !ok {
		return
	}
	s.warehouse(r.Warehouse).Reserved -= r.Quantity
	delete(s.reservations, id)
	if s.byOrder[r.Order]--; s.byOrder[r.Order] <= 0 {
		delete(s.byOrder, r.Order)
	}
}

func (s *Stock) warehouse(id string) *Warehouse {
	w := s.warehouses[id]
	if w == nil {
		w = &Warehouse{}
		s.warehouses[id] = w
	}
	return w
}

// fits refuses adding n units to a warehouse where the SKU's on hand,
// summed over its warehouses, would pass the int64's range: a count would
// wrap negative here and in every read model, and a read model's total
// over warehouses would no longer fit its column.
func (s *Stock) fits(warehouse string, n int64) error {
	var total int64
	for _, w := range s.warehouses {
		total += w.OnHand // each ≥ 0, and their sum fitted before
	}
	if total > math.MaxInt64-n {
		return fmt.Errorf("%w: %s has %d on hand over its warehouses, adding %d at %s", ErrTooMany, s.sku, total, n, warehouse)
	}
	return nil
}

// CheckInvariant reports a warehouse whose counts break reserved ≤ on hand
// or go negative. Tests assert it after every event.
func (s *Stock) CheckInvariant() error {
	for id, w := range s.warehouses {
		if w.Reserved < 0 || w.OnHand < 0 || w.Reserved > w.OnHand {
			return fmt.Errorf("sku %s warehouse %s: on hand %d, reserved %d", s.sku, id, w.OnHand, w.Reserved)
		}
	}
	return nil
}
