package domain_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/orders/domain"
)

var (
	now  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ts   = timestamppb.New(now)
	cust = &typesv1.Customer{CustomerId: "cus-1", Email: "a@example.com", Name: "Ada"}
	addr = &typesv1.Address{Name: "Ada", Line1: "1 Road", City: "Berlin", PostalCode: "10115", CountryCode: "DE"}
)

func eur(n int64) *typesv1.Money { return &typesv1.Money{AmountMinor: n, Currency: "EUR"} }

func line(sku string, q, unit int64) *ordersv1.OrderLine {
	return &ordersv1.OrderLine{Sku: sku, Name: "n-" + sku, Quantity: q, UnitPrice: eur(unit)}
}

func placeCmd(checkout string, lines ...*ordersv1.OrderLine) *ordersv1.PlaceOrder {
	return &ordersv1.PlaceOrder{CheckoutId: checkout, CartId: "cart-1", Customer: cust, ShippingAddress: addr, Lines: lines}
}

func placed() *ordersv1.OrderPlaced {
	return &ordersv1.OrderPlaced{
		OrderId: "order-co-1", CheckoutId: "co-1", CartId: "cart-1", Customer: cust, ShippingAddress: addr,
		Lines: []*ordersv1.OrderLine{
			{Sku: "a", Name: "n-a", Quantity: 2, UnitPrice: eur(250), LineTotal: eur(500)},
			{Sku: "b", Name: "n-b", Quantity: 1, UnitPrice: eur(1000), LineTotal: eur(1000)},
		},
		Totals:   &typesv1.Totals{Subtotal: eur(1500), Shipping: eur(0), Tax: eur(0), Discount: eur(0), Total: eur(1500)},
		PlacedAt: ts,
	}
}

var (
	confirmed = &ordersv1.OrderConfirmed{OrderId: "order-co-1", ConfirmedAt: ts}
	paid      = &ordersv1.OrderPaid{OrderId: "order-co-1", PaymentId: "pay-1", Amount: eur(1500), PaidAt: ts}
	shipped   = &ordersv1.OrderShipped{OrderId: "order-co-1", ShipmentId: "sh-1", Carrier: "DHL", TrackingNumber: "T1", ShippedAt: ts}
	cancelled = &ordersv1.OrderCancelled{OrderId: "order-co-1", Reason: ordersv1.CancelReason_CANCEL_REASON_CUSTOMER, CancelledAt: ts}
)

type command func(o *domain.Order) ([]proto.Message, error)

func place(c *ordersv1.PlaceOrder) command {
	return func(o *domain.Order) ([]proto.Message, error) { return o.Place(c, now) }
}
func confirm(o *domain.Order) ([]proto.Message, error) { return o.Confirm(now) }
func markPaid(amount *typesv1.Money) command {
	return func(o *domain.Order) ([]proto.Message, error) { return o.MarkPaid("pay-1", amount, now) }
}
func cancel(r ordersv1.CancelReason) command {
	return func(o *domain.Order) ([]proto.Message, error) { return o.Cancel(r, "", now) }
}
func ship(o *domain.Order) ([]proto.Message, error) { return o.Ship("sh-1", "DHL", "T1", now) }

const customer = ordersv1.CancelReason_CANCEL_REASON_CUSTOMER

func TestOrder(t *testing.T) {
	withTotals := placeCmd("co-1", line("a", 2, 250), line("b", 1, 1000))
	withTotals.Totals = &typesv1.Totals{Shipping: eur(500), Tax: eur(100), Discount: eur(200), Total: eur(1900)}
	wantWithTotals := placed()
	wantWithTotals.Totals = &typesv1.Totals{Subtotal: eur(1500), Shipping: eur(500), Tax: eur(100), Discount: eur(200), Total: eur(1900)}
	badTotal := placeCmd("co-1", line("a", 2, 250))
	badTotal.Totals = &typesv1.Totals{Total: eur(1)}
	badSubtotal := placeCmd("co-1", line("a", 2, 250))
	badSubtotal.Totals = &typesv1.Totals{Subtotal: eur(1)}
	badLineTotal := placeCmd("co-1", line("a", 2, 250))
	badLineTotal.Lines[0].LineTotal = eur(499)
	usdShipping := placeCmd("co-1", line("a", 2, 250))
	usdShipping.Totals = &typesv1.Totals{Shipping: &typesv1.Money{AmountMinor: 1, Currency: "USD"}}
	bigDiscount := placeCmd("co-1", line("a", 2, 250))
	bigDiscount.Totals = &typesv1.Totals{Discount: eur(501)}
	shippingOverflow := placeCmd("co-1", line("a", 1, math.MaxInt64))
	shippingOverflow.Totals = &typesv1.Totals{Shipping: eur(1)}
	wrongID := placeCmd("co-1", line("a", 1, 1))
	wrongID.OrderId = "order-co-2"
	rightID := placeCmd("co-1", line("a", 2, 250), line("b", 1, 1000))
	rightID.OrderId = "order-co-1"
	noCustomer := placeCmd("co-1", line("a", 1, 1))
	noCustomer.Customer = nil
	noAddress := placeCmd("co-1", line("a", 1, 1))
	noAddress.ShippingAddress = nil
	noPrice := placeCmd("co-1", line("a", 1, 1))
	noPrice.Lines[0].UnitPrice = nil
	noCurrency := placeCmd("co-1", line("a", 1, 1))
	noCurrency.Lines[0].UnitPrice.Currency = ""
	usdLine := placeCmd("co-1", line("a", 1, 1), line("b", 1, 1))
	usdLine.Lines[1].UnitPrice.Currency = "USD"

	tests := []struct {
		name       string
		given      []proto.Message
		cmd        command
		want       []proto.Message
		err        error // errors.Is target
		transition bool  // want a *TransitionError
	}{
		{name: "place computes line totals and totals", cmd: place(placeCmd("co-1", line("a", 2, 250), line("b", 1, 1000))), want: []proto.Message{placed()}},
		{name: "place with matching order id", cmd: place(rightID), want: []proto.Message{placed()}},
		{name: "place with shipping, tax and discount", cmd: place(withTotals), want: []proto.Message{wantWithTotals}},
		{name: "place again from same checkout is a no-op", given: []proto.Message{placed()}, cmd: place(placeCmd("co-1", line("a", 1, 1)))},
		{name: "place after confirm from same checkout is a no-op", given: []proto.Message{placed(), confirmed}, cmd: place(placeCmd("co-1", line("a", 1, 1)))},
		{name: "place from another checkout", given: []proto.Message{placed()}, cmd: place(placeCmd("co-2", line("a", 1, 1))), err: domain.ErrOtherCheckout},
		{name: "place without checkout", cmd: place(placeCmd("", line("a", 1, 1))), err: domain.ErrInvalid},
		{name: "place with other order id", cmd: place(wrongID), err: domain.ErrInvalid},
		{name: "place without customer", cmd: place(noCustomer), err: domain.ErrInvalid},
		{name: "place without address", cmd: place(noAddress), err: domain.ErrInvalid},
		{name: "place without lines", cmd: place(placeCmd("co-1")), err: domain.ErrInvalid},
		{name: "place with empty sku", cmd: place(placeCmd("co-1", line("", 1, 1))), err: domain.ErrInvalid},
		{name: "place with duplicate sku", cmd: place(placeCmd("co-1", line("a", 1, 1), line("a", 1, 1))), err: domain.ErrInvalid},
		{name: "place with zero quantity", cmd: place(placeCmd("co-1", line("a", 0, 1))), err: domain.ErrInvalid},
		{name: "place with negative quantity", cmd: place(placeCmd("co-1", line("a", -1, 1))), err: domain.ErrInvalid},
		{name: "place with negative price", cmd: place(placeCmd("co-1", line("a", 1, -1))), err: domain.ErrInvalid},
		{name: "place without price", cmd: place(noPrice), err: domain.ErrInvalid},
		{name: "place without currency", cmd: place(noCurrency), err: domain.ErrInvalid},
		{name: "place with two currencies", cmd: place(usdLine), err: domain.ErrCurrencyMismatch},
		{name: "place with shipping in another currency", cmd: place(usdShipping), err: domain.ErrCurrencyMismatch},
		{name: "place with wrong total", cmd: place(badTotal), err: domain.ErrTotalsMismatch},
		{name: "place with wrong subtotal", cmd: place(badSubtotal), err: domain.ErrTotalsMismatch},
		{name: "place with wrong line total", cmd: place(badLineTotal), err: domain.ErrTotalsMismatch},
		{name: "place with discount above gross", cmd: place(bigDiscount), err: domain.ErrInvalid},
		{name: "place with line total overflow", cmd: place(placeCmd("co-1", line("a", 2, math.MaxInt64/2+1))), err: domain.ErrOverflow},
		{name: "place with subtotal overflow", cmd: place(placeCmd("co-1", line("a", 1, math.MaxInt64), line("b", 1, 1))), err: domain.ErrOverflow},
		{name: "place with total overflow", cmd: place(shippingOverflow), err: domain.ErrOverflow},

		{name: "confirm pending", given: []proto.Message{placed()}, cmd: confirm, want: []proto.Message{confirmed}},
		{name: "confirm unplaced", cmd: confirm, transition: true},
		{name: "confirm confirmed", given: []proto.Message{placed(), confirmed}, cmd: confirm, transition: true},
		{name: "confirm paid", given: []proto.Message{placed(), confirmed, paid}, cmd: confirm, transition: true},
		{name: "confirm shipped", given: []proto.Message{placed(), confirmed, paid, shipped}, cmd: confirm, transition: true},
		{name: "confirm cancelled", given: []proto.Message{placed(), cancelled}, cmd: confirm, transition: true},

		{name: "mark paid confirmed", given: []proto.Message{placed(), confirmed}, cmd: markPaid(eur(1500)), want: []proto.Message{paid}},
		{name: "mark paid wrong amount", given: []proto.Message{placed(), confirmed}, cmd: markPaid(eur(1499)), err: domain.ErrAmountMismatch},
		{name: "mark paid wrong currency", given: []proto.Message{placed(), confirmed}, cmd: markPaid(&typesv1.Money{AmountMinor: 1500, Currency: "USD"}), err: domain.ErrCurrencyMismatch},
		{name: "mark paid without amount", given: []proto.Message{placed(), confirmed}, cmd: markPaid(nil), err: domain.ErrInvalid},
		{name: "mark paid unplaced", cmd: markPaid(eur(1500)), transition: true},
		{name: "mark paid pending", given: []proto.Message{placed()}, cmd: markPaid(eur(1500)), transition: true},
		{name: "mark paid paid", given: []proto.Message{placed(), confirmed, paid}, cmd: markPaid(eur(1500)), transition: true},
		{name: "mark paid shipped", given: []proto.Message{placed(), confirmed, paid, shipped}, cmd: markPaid(eur(1500)), transition: true},
		{name: "mark paid cancelled", given: []proto.Message{placed(), cancelled}, cmd: markPaid(eur(1500)), transition: true},

		{name: "cancel pending", given: []proto.Message{placed()}, cmd: cancel(customer), want: []proto.Message{cancelled}},
		{name: "cancel confirmed", given: []proto.Message{placed(), confirmed}, cmd: cancel(customer), want: []proto.Message{cancelled}},
		{name: "cancel without reason", given: []proto.Message{placed()}, cmd: cancel(ordersv1.CancelReason_CANCEL_REASON_UNSPECIFIED), err: domain.ErrInvalid},
		{name: "cancel with unknown reason", given: []proto.Message{placed()}, cmd: cancel(99), err: domain.ErrInvalid},
		{name: "cancel unplaced", cmd: cancel(customer), transition: true},
		{name: "cancel paid needs refund", given: []proto.Message{placed(), confirmed, paid}, cmd: cancel(customer), transition: true, err: domain.ErrRefundRequired},
		{name: "cancel shipped", given: []proto.Message{placed(), confirmed, paid, shipped}, cmd: cancel(customer), transition: true},
		{name: "cancel cancelled", given: []proto.Message{placed(), cancelled}, cmd: cancel(customer), transition: true},

		{name: "ship paid", given: []proto.Message{placed(), confirmed, paid}, cmd: ship, want: []proto.Message{shipped}},
		{name: "ship without carrier", given: []proto.Message{placed(), confirmed, paid}, cmd: func(o *domain.Order) ([]proto.Message, error) { return o.Ship("sh-1", "", "", now) }, err: domain.ErrInvalid},
		{name: "ship unplaced", cmd: ship, transition: true},
		{name: "ship pending", given: []proto.Message{placed()}, cmd: ship, transition: true},
		{name: "ship confirmed", given: []proto.Message{placed(), confirmed}, cmd: ship, transition: true},
		{name: "ship shipped", given: []proto.Message{placed(), confirmed, paid, shipped}, cmd: ship, transition: true},
		{name: "ship cancelled", given: []proto.Message{placed(), cancelled}, cmd: ship, transition: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := domain.New("orders-x")
			for _, e := range tt.given {
				o = domain.Apply(o, e)
			}
			got, err := tt.cmd(o)
			if tt.err != nil && !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if domain.IsTransition(err) != tt.transition {
				t.Fatalf("IsTransition(%v) = %v, want %v", err, !tt.transition, tt.transition)
			}
			if tt.err == nil && !tt.transition && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if err != nil && got != nil {
				t.Errorf("events %v returned with error", got)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplyFoldsState(t *testing.T) {
	o := domain.New("")
	if o.Status() != domain.StatusNone || o.ID() != "" {
		t.Fatalf("new order: status %v id %q", o.Status(), o.ID())
	}
	steps := []struct {
		e    proto.Message
		want domain.Status
	}{{placed(), domain.StatusPending}, {confirmed, domain.StatusConfirmed}, {paid, domain.StatusPaid}, {shipped, domain.StatusShipped}}
	for _, s := range steps {
		o = domain.Apply(o, s.e)
		if o.Status() != s.want {
			t.Fatalf("after %T: status %v, want %v", s.e, o.Status(), s.want)
		}
	}
	if o.ID() != domain.OrderID("co-1") || o.CheckoutID() != "co-1" {
		t.Errorf("id %q checkout %q", o.ID(), o.CheckoutID())
	}
	if diff := cmp.Diff(eur(1500), o.Total(), protocmp.Transform()); diff != "" {
		t.Errorf("total (-want +got):\n%s", diff)
	}
	if got := domain.Apply(nil, placed()).Status(); got != domain.StatusPending {
		t.Errorf("Apply(nil, placed) status %v", got)
	}
}

func TestTransitionError(t *testing.T) {
	err := error(&domain.TransitionError{From: domain.StatusShipped, Action: "cancel"})
	if got, want := err.Error(), "cannot cancel an order that is shipped"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if errors.Is(err, domain.ErrRefundRequired) {
		t.Error("shipped cancel wraps ErrRefundRequired")
	}
	if got, want := (&domain.TransitionError{From: domain.StatusNone, Action: "confirm"}).Error(), "cannot confirm an order that does not exist"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if domain.IsTransition(errors.New("x")) {
		t.Error("IsTransition(plain error) = true")
	}
	if s := domain.Status(42).String(); s != "status(42)" {
		t.Errorf("String() = %q", s)
	}
}
