package domain_test

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/services/stock/domain"
)

var (
	t0  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ts0 = timestamppb.New(t0)
	exp = timestamppb.New(t0.Add(15 * time.Minute))
)

const sku = "SKU-1"

func received(wh string, n int64) proto.Message {
	return &stockv1.StockReceived{Sku: sku, WarehouseId: wh, Quantity: n, ReceivedAt: ts0}
}

func reserved(id, wh string, n int64, order string) proto.Message {
	return &stockv1.StockReserved{ReservationId: id, Sku: sku, WarehouseId: wh, Quantity: n, OrderId: order,
		ExpiresAt: exp, ReservedAt: ts0}
}

// ids returns a deterministic id source: r1, r2, ...
func ids() func() string {
	n := 0
	return func() string { n++; return fmt.Sprintf("r%d", n) }
}

func TestCommands(t *testing.T) {
	adj := func(wh string, d int64, reason stockv1.AdjustmentReason) proto.Message {
		return &stockv1.StockAdjusted{Sku: sku, WarehouseId: wh, Delta: d, Reason: reason, Note: "n", AdjustedAt: ts0}
	}
	const damaged = stockv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGED
	const cancelled = stockv1.ReleaseReason_RELEASE_REASON_ORDER_CANCELLED
	res := func(order string, qty int64, prio ...string) func(*domain.Stock) ([]proto.Message, error) {
		return func(s *domain.Stock) ([]proto.Message, error) {
			return s.Reserve(domain.ReserveRequest{Order: order, Quantity: qty, TTL: 15 * time.Minute, Priority: prio}, t0, ids())
		}
	}
	tests := []struct {
		name  string
		given []proto.Message
		when  func(*domain.Stock) ([]proto.Message, error)
		want  []proto.Message
		err   error
	}{
		{name: "receive", when: func(s *domain.Stock) ([]proto.Message, error) { return s.Receive("A", 5, "", t0) },
			want: []proto.Message{received("A", 5)}},
		{name: "receive zero", when: func(s *domain.Stock) ([]proto.Message, error) { return s.Receive("A", 0, "", t0) },
			err: domain.ErrInvalidQuantity},
		{name: "receive negative", when: func(s *domain.Stock) ([]proto.Message, error) { return s.Receive("A", -1, "", t0) },
			err: domain.ErrInvalidQuantity},
		{name: "receive past the int64", given: []proto.Message{received("A", math.MaxInt64-1)},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Receive("A", 2, "", t0) }, err: domain.ErrTooMany},
		{name: "receive up to the int64", given: []proto.Message{received("A", math.MaxInt64-1)},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Receive("A", 1, "", t0) }, want: []proto.Message{received("A", 1)}},
		{name: "adjust past the int64", given: []proto.Message{received("A", math.MaxInt64)},
			when: func(s *domain.Stock) ([]proto.Message, error) {
				return s.Adjust("A", 1, stockv1.AdjustmentReason_ADJUSTMENT_REASON_FOUND, "", t0)
			}, err: domain.ErrTooMany},
		{name: "receive past the int64 over warehouses", given: []proto.Message{received("A", math.MaxInt64/2), received("B", math.MaxInt64/2)},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Receive("C", 2, "", t0) }, err: domain.ErrTooMany},
		{name: "receive no warehouse", when: func(s *domain.Stock) ([]proto.Message, error) { return s.Receive("", 1, "", t0) },
			err: domain.ErrInvalidWarehouse},
		{name: "adjust down", given: []proto.Message{received("A", 5)},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Adjust("A", -2, damaged, "n", t0) },
			want: []proto.Message{adj("A", -2, damaged)}},
		{name: "adjust up unknown warehouse", when: func(s *domain.Stock) ([]proto.Message, error) {
			return s.Adjust("B", 3, stockv1.AdjustmentReason_ADJUSTMENT_REASON_FOUND, "n", t0)
		}, want: []proto.Message{adj("B", 3, stockv1.AdjustmentReason_ADJUSTMENT_REASON_FOUND)}},
		{name: "adjust zero", given: []proto.Message{received("A", 5)},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Adjust("A", 0, damaged, "", t0) },
			err:  domain.ErrInvalidQuantity},
		{name: "adjust no reason", given: []proto.Message{received("A", 5)},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Adjust("A", -1, 0, "", t0) },
			err:  domain.ErrInvalidReason},
		{name: "adjust unknown reason", given: []proto.Message{received("A", 5)},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Adjust("A", -1, 99, "", t0) },
			err:  domain.ErrInvalidReason},
		{name: "adjust no warehouse",
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Adjust("", -1, damaged, "", t0) },
			err:  domain.ErrInvalidWarehouse},
		{name: "adjust below reserved", given: []proto.Message{received("A", 5), reserved("r0", "A", 4, "o1")},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Adjust("A", -2, damaged, "", t0) },
			err:  domain.ErrBelowReserved},
		{name: "adjust below zero", given: []proto.Message{received("A", 1)},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Adjust("A", -2, damaged, "", t0) },
			err:  domain.ErrBelowReserved},
		{name: "reserve single warehouse by priority", given: []proto.Message{received("A", 5), received("B", 5)},
			when: res("o1", 3, "B", "A"), want: []proto.Message{reserved("r1", "B", 3, "o1")}},
		{name: "reserve default priority is by id", given: []proto.Message{received("B", 5), received("A", 5)},
			when: res("o1", 3), want: []proto.Message{reserved("r1", "A", 3, "o1")}},
		{name: "reserve skips a warehouse too small", given: []proto.Message{received("A", 2), received("B", 5)},
			when: res("o1", 3, "A", "B"), want: []proto.Message{reserved("r1", "B", 3, "o1")}},
		{name: "reserve splits", given: []proto.Message{received("A", 2), received("B", 2), received("C", 2)},
			when: res("o1", 5, "C", "A"),
			want: []proto.Message{reserved("r1", "C", 2, "o1"), reserved("r2", "A", 2, "o1"), reserved("r3", "B", 1, "o1")}},
		{name: "reserve counts other reservations", given: []proto.Message{received("A", 5), reserved("r0", "A", 4, "o0"), received("B", 1)},
			when: res("o1", 2), want: []proto.Message{reserved("r1", "A", 1, "o1"), reserved("r2", "B", 1, "o1")}},
		{name: "reserve insufficient", given: []proto.Message{received("A", 2), received("B", 2)},
			when: res("o1", 5), err: domain.ErrInsufficientStock},
		{name: "reserve nothing received", when: res("o1", 1), err: domain.ErrInsufficientStock},
		{name: "reserve zero", given: []proto.Message{received("A", 2)}, when: res("o1", 0), err: domain.ErrInvalidQuantity},
		{name: "reserve negative", given: []proto.Message{received("A", 2)}, when: res("o1", -1), err: domain.ErrInvalidQuantity},
		{name: "reserve no order", given: []proto.Message{received("A", 2)}, when: res("", 1), err: domain.ErrInvalidOrder},
		{name: "reserve twice for an order", given: []proto.Message{received("A", 5), reserved("r0", "A", 1, "o1")},
			when: res("o1", 1), err: domain.ErrAlreadyReserved},
		{name: "reserve no ttl", given: []proto.Message{received("A", 5)}, when: func(s *domain.Stock) ([]proto.Message, error) {
			return s.Reserve(domain.ReserveRequest{Order: "o", Quantity: 1}, t0, ids())
		}, err: domain.ErrInvalidTTL},
		{name: "release all of an order", given: []proto.Message{received("A", 2), received("B", 2), reserved("r1", "A", 2, "o1"), reserved("r2", "B", 1, "o1"), reserved("r3", "B", 1, "o2")},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Release("o1", nil, cancelled, t0) },
			want: []proto.Message{
				&stockv1.ReservationReleased{ReservationId: "r1", Sku: sku, WarehouseId: "A", Quantity: 2, OrderId: "o1", Reason: cancelled, ReleasedAt: ts0},
				&stockv1.ReservationReleased{ReservationId: "r2", Sku: sku, WarehouseId: "B", Quantity: 1, OrderId: "o1", Reason: cancelled, ReleasedAt: ts0}}},
		{name: "release by id", given: []proto.Message{received("A", 2), reserved("r1", "A", 1, "o1"), reserved("r2", "A", 1, "o1")},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Release("o1", []string{"r2"}, cancelled, t0) },
			want: []proto.Message{&stockv1.ReservationReleased{ReservationId: "r2", Sku: sku, WarehouseId: "A", Quantity: 1, OrderId: "o1", Reason: cancelled, ReleasedAt: ts0}}},
		{name: "release unknown order", given: []proto.Message{received("A", 2), reserved("r1", "A", 1, "o1")},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Release("o2", nil, cancelled, t0) },
			err:  domain.ErrUnknownReservation},
		{name: "release another order's reservation", given: []proto.Message{received("A", 2), reserved("r1", "A", 1, "o1")},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Release("o2", []string{"r1"}, cancelled, t0) },
			err:  domain.ErrUnknownReservation},
		{name: "release twice", given: []proto.Message{received("A", 2), reserved("r1", "A", 1, "o1"),
			&stockv1.ReservationReleased{ReservationId: "r1", Sku: sku, WarehouseId: "A", Quantity: 1, OrderId: "o1", Reason: cancelled}},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Release("o1", nil, cancelled, t0) },
			err:  domain.ErrUnknownReservation},
		{name: "release no reason", given: []proto.Message{received("A", 2), reserved("r1", "A", 1, "o1")},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Release("o1", nil, 0, t0) },
			err:  domain.ErrInvalidReason},
		{name: "release no order", given: []proto.Message{received("A", 2), reserved("r1", "A", 1, "o1")},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Release("", nil, cancelled, t0) },
			err:  domain.ErrInvalidOrder},
		{name: "commit", given: []proto.Message{received("A", 2), reserved("r1", "A", 2, "o1")},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Commit("o1", nil, t0) },
			want: []proto.Message{&stockv1.ReservationCommitted{ReservationId: "r1", Sku: sku, WarehouseId: "A", Quantity: 2, OrderId: "o1", CommittedAt: ts0}}},
		{name: "commit unknown", given: []proto.Message{received("A", 2)},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Commit("o1", nil, t0) },
			err:  domain.ErrUnknownReservation},
		{name: "commit after expiry", given: []proto.Message{received("A", 2), reserved("r1", "A", 2, "o1"),
			&stockv1.ReservationExpired{ReservationId: "r1", Sku: sku, WarehouseId: "A", Quantity: 2, OrderId: "o1", ExpiredAt: exp}},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Commit("o1", nil, t0) },
			err:  domain.ErrUnknownReservation},
		{name: "expire when due", given: []proto.Message{received("A", 2), reserved("r1", "A", 2, "o1")},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Expire("r1", t0.Add(15*time.Minute)) },
			want: []proto.Message{&stockv1.ReservationExpired{ReservationId: "r1", Sku: sku, WarehouseId: "A", Quantity: 2, OrderId: "o1", ExpiredAt: exp}}},
		{name: "expire not due", given: []proto.Message{received("A", 2), reserved("r1", "A", 2, "o1")},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Expire("r1", t0.Add(14*time.Minute)) },
			err:  domain.ErrNotDue},
		{name: "expire committed", given: []proto.Message{received("A", 2), reserved("r1", "A", 2, "o1"),
			&stockv1.ReservationCommitted{ReservationId: "r1", Sku: sku, WarehouseId: "A", Quantity: 2, OrderId: "o1"}},
			when: func(s *domain.Stock) ([]proto.Message, error) { return s.Expire("r1", t0.Add(time.Hour)) },
			err:  domain.ErrUnknownReservation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := domain.New(sku)
			for _, e := range tt.given {
				s.Apply(e)
			}
			got, err := tt.when(s)
			if !errors.Is(err, tt.err) {
				t.Fatalf("error = %v, want %v", err, tt.err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d events %v, want %d %v", len(got), got, len(tt.want), tt.want)
			}
			for i := range got {
				if !proto.Equal(got[i], tt.want[i]) {
					t.Errorf("event %d = %v, want %v", i, got[i], tt.want[i])
				}
			}
			for _, e := range got {
				s.Apply(e)
				if err := s.CheckInvariant(); err != nil {
					t.Fatalf("after %v: %v", e, err)
				}
			}
		})
	}
}

func TestInsufficientStockError(t *testing.T) {
	s := domain.New(sku)
	s.Apply(received("A", 2))
	_, err := s.Reserve(domain.ReserveRequest{Order: "o", Quantity: 3, TTL: time.Minute}, t0, ids())
	var ise *domain.InsufficientStockError
	if !errors.As(err, &ise) || ise.Requested != 3 || ise.Available != 2 {
		t.Fatalf("err = %#v", err)
	}
}

// TestInvariantUnderRandomCommands folds every accepted decision of a long
// deterministic command sequence and checks reserved ≤ on hand after each event.
func TestInvariantUnderRandomCommands(t *testing.T) {
	s := domain.New(sku)
	next := ids()
	now := t0
	seed := uint32(1)
	rnd := func(n int) int { seed = seed*1664525 + 1013904223; return int(seed>>8) % n }
	whs := []string{"A", "B", "C"}
	accepted := 0
	for i := range 5000 {
		now = now.Add(time.Duration(rnd(60)) * time.Second)
		order := fmt.Sprintf("o%d", rnd(40))
		var evs []proto.Message
		var err error
		switch rnd(6) {
		case 0:
			evs, err = s.Receive(whs[rnd(3)], int64(rnd(5)+1), "", now)
		case 1:
			evs, err = s.Adjust(whs[rnd(3)], int64(rnd(9)-4), stockv1.AdjustmentReason_ADJUSTMENT_REASON_CYCLE_COUNT, "", now)
		case 2:
			evs, err = s.Reserve(domain.ReserveRequest{Order: order, Quantity: int64(rnd(6) + 1), TTL: time.Duration(rnd(30)+1) * time.Minute}, now, next)
		case 3:
			evs, err = s.Release(order, nil, stockv1.ReleaseReason_RELEASE_REASON_MANUAL, now)
		case 4:
			evs, err = s.Commit(order, nil, now)
		case 5:
			for _, r := range s.Reservations() {
				if e, xerr := s.Expire(r.ID, now); xerr == nil {
					evs = append(evs, e...)
				}
			}
		}
		if err != nil {
			continue
		}
		accepted++
		for _, e := range evs {
			s.Apply(e)
			if err := s.CheckInvariant(); err != nil {
				t.Fatalf("step %d after %v: %v", i, e, err)
			}
		}
	}
	if accepted < 1000 {
		t.Fatalf("only %d commands accepted; the sequence does not exercise the aggregate", accepted)
	}
}

func TestAllocate(t *testing.T) {
	// Stock: X has 5 in A and 2 in B; Y has 1 in A; Z was never received;
	// order "held" already holds X.
	stocks := func() map[string]*domain.Stock {
		x, y := domain.New("X"), domain.New("Y")
		for _, e := range []proto.Message{
			&stockv1.StockReceived{Sku: "X", WarehouseId: "A", Quantity: 5},
			&stockv1.StockReceived{Sku: "X", WarehouseId: "B", Quantity: 2},
			&stockv1.StockReserved{ReservationId: "h1", Sku: "X", WarehouseId: "A", Quantity: 1, OrderId: "held"},
		} {
			x.Apply(e)
		}
		y.Apply(&stockv1.StockReceived{Sku: "Y", WarehouseId: "A", Quantity: 1})
		return map[string]*domain.Stock{"X": x, "Y": y, "Z": domain.New("Z")}
	}
	line := func(sku string, n int64) domain.OrderLine { return domain.OrderLine{SKU: sku, Quantity: n} }
	res := func(id, sku, wh string, n int64) proto.Message {
		return &stockv1.StockReserved{ReservationId: id, Sku: sku, WarehouseId: wh, Quantity: n, OrderId: "o1", CheckoutId: "co1",
			ExpiresAt: exp, ReservedAt: ts0}
	}
	short := func(sku string, req, avail int64) *stockv1.Shortage {
		return &stockv1.Shortage{Sku: sku, Requested: req, Available: avail}
	}
	tests := []struct {
		name     string
		order    string
		lines    []domain.OrderLine
		reserved map[string][]proto.Message
		failed   []*stockv1.Shortage
		err      error
	}{
		{name: "every line served, split by priority", lines: []domain.OrderLine{line("X", 6), line("Y", 1)},
			reserved: map[string][]proto.Message{"X": {res("r1", "X", "B", 2), res("r2", "X", "A", 4)}, "Y": {res("r3", "Y", "A", 1)}}},
		{name: "one short line fails the order, nothing reserved", lines: []domain.OrderLine{line("X", 3), line("Y", 2)},
			failed: []*stockv1.Shortage{short("Y", 2, 1)}},
		{name: "every short line is named", lines: []domain.OrderLine{line("X", 7), line("Y", 1), line("Z", 1)},
			failed: []*stockv1.Shortage{short("X", 7, 6), short("Z", 1, 0)}},
		{name: "a line the order already holds is a refusal, not a shortage", order: "held", lines: []domain.OrderLine{line("X", 1), line("Y", 5)},
			err: domain.ErrAlreadyReserved},
		{name: "no lines", err: domain.ErrInvalidQuantity},
		{name: "zero quantity", lines: []domain.OrderLine{line("X", 0)}, err: domain.ErrInvalidQuantity},
		{name: "sku twice", lines: []domain.OrderLine{line("X", 1), line("X", 1)}, err: domain.ErrInvalidSKU},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := stocks()
			order := tt.order
			if order == "" {
				order = "o1"
			}
			a, err := domain.Allocate(domain.AllocateRequest{Order: order, CheckoutID: "co1", Lines: tt.lines, TTL: 15 * time.Minute,
				Priority: []string{"B"}}, func(sku string) *domain.Stock { return st[sku] }, t0, ids())
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if tt.failed != nil {
				want := &stockv1.AllocationFailed{OrderId: "o1", CheckoutId: "co1", Shortages: tt.failed, FailedAt: ts0}
				if !proto.Equal(a.Failed, want) || len(a.Reserved) != 0 {
					t.Fatalf("allocation = %v / %v, want failed %v", a.Reserved, a.Failed, want)
				}
				if err := domain.ShortageError(a.Failed.GetShortages()); !errors.Is(err, domain.ErrInsufficientStock) {
					t.Fatalf("shortage error %v does not match ErrInsufficientStock", err)
				}
				return
			}
			if a.Failed != nil || len(a.Reserved) != len(tt.reserved) {
				t.Fatalf("allocation = %v / %v, want %v", a.Reserved, a.Failed, tt.reserved)
			}
			for sku, want := range tt.reserved {
				got := a.Reserved[sku]
				if len(got) != len(want) {
					t.Fatalf("%s: %v, want %v", sku, got, want)
				}
				for i := range want {
					if !proto.Equal(got[i], want[i]) {
						t.Errorf("%s event %d = %v, want %v", sku, i, got[i], want[i])
					}
				}
			}
		})
	}
}

func TestShortageErrorText(t *testing.T) {
	err := domain.ShortageError{{Sku: "X", Requested: 7, Available: 6}, {Sku: "Z", Requested: 1}}
	want := "insufficient stock of X: requested 7, available 6; insufficient stock of Z: requested 1, available 0"
	if err.Error() != want {
		t.Fatalf("%q, want %q", err.Error(), want)
	}
}
