package domain_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/carts/domain"
)

var (
	t0  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	now = t0.Add(time.Hour)
	ts  = timestamppb.New(now)
)

func eur(n int64) *typesv1.Money { return &typesv1.Money{AmountMinor: n, Currency: "EUR"} }
func prod(sku string, unit int64) domain.Product {
	return domain.Product{SKU: sku, Name: "n-" + sku, UnitPrice: eur(unit)}
}

var (
	created  = &cartsv1.CartCreated{CartId: "c1", CustomerId: "cus", Currency: "EUR", CreatedAt: timestamppb.New(t0)}
	addedA   = &cartsv1.LineAdded{CartId: "c1", Line: &cartsv1.CartLine{Sku: "a", Name: "n-a", Quantity: 2, UnitPrice: eur(250), LineTotal: eur(500)}, AddedAt: ts}
	addedB   = &cartsv1.LineAdded{CartId: "c1", Line: &cartsv1.CartLine{Sku: "b", Name: "n-b", Quantity: 1, UnitPrice: eur(1000), LineTotal: eur(1000)}, AddedAt: ts}
	cust     = &typesv1.Customer{CustomerId: "cus"}
	addr     = &typesv1.Address{Name: "Ada", CountryCode: "DE"}
	method   = &typesv1.PaymentMethod{Kind: typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_CARD, Token: "tok"}
	checkout = &cartsv1.CheckoutRequested{CartId: "c1", CheckoutId: "co-1", CartVersion: 3,
		Lines:    []*cartsv1.CartLine{addedA.Line, addedB.Line},
		Totals:   &typesv1.Totals{Subtotal: eur(1500), Shipping: eur(0), Tax: eur(0), Discount: eur(0), Total: eur(1500)},
		Customer: cust, ShippingAddress: addr, PaymentMethod: method, RequestedAt: ts}
	abandoned = &cartsv1.CartAbandoned{CartId: "c1", Reason: cartsv1.AbandonReason_ABANDON_REASON_CUSTOMER, LastActivityAt: ts, AbandonedAt: ts}
	closed    = &cartsv1.CartClosed{CartId: "c1", CheckoutId: "co-1", OrderId: "order-co-1", ClosedAt: ts}
)

type command func(c *domain.Cart) ([]proto.Message, error)

func create(c *domain.Cart) ([]proto.Message, error) { return c.Create("c1", "cus", "EUR", t0) }
func add(p domain.Product, q int64) command {
	return func(c *domain.Cart) ([]proto.Message, error) { return c.AddLine(p, q, now) }
}
func change(sku string, q int64) command {
	return func(c *domain.Cart) ([]proto.Message, error) { return c.ChangeQuantity(sku, q, now) }
}
func remove(sku string) command {
	return func(c *domain.Cart) ([]proto.Message, error) { return c.RemoveLine(sku, now) }
}
func clear(c *domain.Cart) ([]proto.Message, error) { return c.Clear(now) }
func requestCheckout(version int64) command {
	return func(c *domain.Cart) ([]proto.Message, error) {
		return c.RequestCheckout(&cartsv1.RequestCheckout{CartId: "c1", ExpectedVersion: version, Customer: cust, ShippingAddress: addr, PaymentMethod: method}, "co-1", now)
	}
}
func abandon(r cartsv1.AbandonReason, at time.Time) command {
	return func(c *domain.Cart) ([]proto.Message, error) { return c.Abandon(r, 0, at) }
}
func reopen(co string) command {
	return func(c *domain.Cart) ([]proto.Message, error) { return c.Reopen(co, "payment failed", now) }
}
func closeCart(co string) command {
	return func(c *domain.Cart) ([]proto.Message, error) { return c.Close(co, "order-co-1", now) }
}

const (
	idle     = cartsv1.AbandonReason_ABANDON_REASON_IDLE
	customer = cartsv1.AbandonReason_ABANDON_REASON_CUSTOMER
)

func full() []proto.Message {
	evs := []proto.Message{created}
	for i := range domain.MaxLines {
		evs = append(evs, &cartsv1.LineAdded{CartId: "c1", Line: &cartsv1.CartLine{Sku: fmt.Sprint(i), Quantity: 1, UnitPrice: eur(1), LineTotal: eur(1)}, AddedAt: ts})
	}
	return evs
}

func TestCart(t *testing.T) {
	open := []proto.Message{created, addedA, addedB}
	frozen := []proto.Message{created, addedA, addedB, checkout}
	gone := []proto.Message{created, addedA, abandoned}
	done := []proto.Message{created, addedA, addedB, checkout, closed}
	lastTouch := timestamppb.New(now)
	states := map[string][]proto.Message{"none": nil, "checking out": frozen, "abandoned": gone, "closed": done}
	tests := []struct {
		name       string
		given      []proto.Message
		cmd        command
		want       []proto.Message
		err        error
		transition bool
	}{
		{name: "create", cmd: create, want: []proto.Message{created}},
		{name: "create without currency", cmd: func(c *domain.Cart) ([]proto.Message, error) { return c.Create("c1", "", "", now) }, err: domain.ErrInvalid},
		{name: "create twice", given: []proto.Message{created}, cmd: create, transition: true},

		{name: "add line", given: []proto.Message{created}, cmd: add(prod("a", 250), 2), want: []proto.Message{addedA}},
		{name: "add to existing line", given: open, cmd: add(prod("a", 250), 3), want: []proto.Message{&cartsv1.LineQuantityChanged{CartId: "c1", Sku: "a", Quantity: 5, PreviousQuantity: 2, ChangedAt: ts}}},
		{name: "add beyond max quantity", given: open, cmd: add(prod("a", 250), domain.MaxQuantity-1), err: domain.ErrQuantity},
		{name: "add zero", given: open, cmd: add(prod("c", 1), 0), err: domain.ErrQuantity},
		{name: "add negative", given: open, cmd: add(prod("c", 1), -1), err: domain.ErrQuantity},
		{name: "add other currency", given: open, cmd: add(domain.Product{SKU: "c", UnitPrice: &typesv1.Money{AmountMinor: 1, Currency: "USD"}}, 1), err: domain.ErrCurrencyMismatch},
		{name: "add without price", given: open, cmd: add(domain.Product{SKU: "c"}, 1), err: domain.ErrInvalid},
		{name: "add overflowing price", given: open, cmd: add(prod("c", 1<<62), 2), err: domain.ErrOverflow},
		{name: "add 101st line", given: full(), cmd: add(prod("x", 1), 1), err: domain.ErrTooManyLines},
		{name: "add to a full cart's existing line", given: full(), cmd: add(prod("0", 1), 1), want: []proto.Message{&cartsv1.LineQuantityChanged{CartId: "c1", Sku: "0", Quantity: 2, PreviousQuantity: 1, ChangedAt: ts}}},

		{name: "change quantity", given: open, cmd: change("a", 7), want: []proto.Message{&cartsv1.LineQuantityChanged{CartId: "c1", Sku: "a", Quantity: 7, PreviousQuantity: 2, ChangedAt: ts}}},
		{name: "change to same quantity is a no-op", given: open, cmd: change("a", 2)},
		{name: "change missing line", given: open, cmd: change("z", 1), err: domain.ErrNoSuchLine},
		{name: "change to zero", given: open, cmd: change("a", 0), err: domain.ErrQuantity},
		{name: "change above max", given: open, cmd: change("a", domain.MaxQuantity+1), err: domain.ErrQuantity},

		{name: "remove line", given: open, cmd: remove("a"), want: []proto.Message{&cartsv1.LineRemoved{CartId: "c1", Sku: "a", RemovedAt: ts}}},
		{name: "remove missing line", given: open, cmd: remove("z"), err: domain.ErrNoSuchLine},
		{name: "remove removed line", given: append(open[:3:3], &cartsv1.LineRemoved{CartId: "c1", Sku: "a", RemovedAt: ts}), cmd: remove("a"), err: domain.ErrNoSuchLine},

		{name: "clear", given: open, cmd: clear, want: []proto.Message{&cartsv1.CartCleared{CartId: "c1", ClearedAt: ts}}},
		{name: "clear empty is a no-op", given: []proto.Message{created}, cmd: clear},

		{name: "request checkout freezes lines and totals", given: open, cmd: requestCheckout(0), want: []proto.Message{checkout}},
		{name: "request checkout at expected version", given: open, cmd: requestCheckout(3), want: []proto.Message{checkout}},
		{name: "request checkout at stale version", given: open, cmd: requestCheckout(2), err: domain.ErrVersionMismatch},
		{name: "request checkout of empty cart", given: []proto.Message{created}, cmd: requestCheckout(0), err: domain.ErrEmpty},
		{name: "request checkout without address", given: open, cmd: func(c *domain.Cart) ([]proto.Message, error) {
			return c.RequestCheckout(&cartsv1.RequestCheckout{Customer: cust, PaymentMethod: method}, "co-1", now)
		}, err: domain.ErrInvalid},

		{name: "abandon idle after 24h", given: open, cmd: abandon(idle, now.Add(24*time.Hour)), want: []proto.Message{&cartsv1.CartAbandoned{CartId: "c1", Reason: idle, LastActivityAt: lastTouch, AbandonedAt: timestamppb.New(now.Add(24 * time.Hour))}}},
		{name: "abandon idle too early", given: open, cmd: abandon(idle, now.Add(24*time.Hour-time.Second)), err: domain.ErrNotIdle},
		{name: "abandon idle with configured timeout", given: open, cmd: func(c *domain.Cart) ([]proto.Message, error) { return c.Abandon(idle, time.Hour, now.Add(time.Hour)) },
			want: []proto.Message{&cartsv1.CartAbandoned{CartId: "c1", Reason: idle, LastActivityAt: lastTouch, AbandonedAt: timestamppb.New(now.Add(time.Hour))}}},
		{name: "abandon by customer", given: open, cmd: abandon(customer, now), want: []proto.Message{abandoned}},
		{name: "abandon without reason", given: open, cmd: abandon(0, now), err: domain.ErrInvalid},

		{name: "reopen after failed checkout", given: frozen, cmd: reopen("co-1"), want: []proto.Message{&cartsv1.CartReopened{CartId: "c1", CheckoutId: "co-1", Reason: "payment failed", ReopenedAt: ts}}},
		{name: "reopen other checkout", given: frozen, cmd: reopen("co-2"), err: domain.ErrOtherCheckout},
		{name: "reopen abandoned", given: gone, cmd: reopen(""), want: []proto.Message{&cartsv1.CartReopened{CartId: "c1", Reason: "payment failed", ReopenedAt: ts}}},
		{name: "edit after reopen", given: append(frozen[:4:4], &cartsv1.CartReopened{CartId: "c1", CheckoutId: "co-1", ReopenedAt: ts}), cmd: remove("a"), want: []proto.Message{&cartsv1.LineRemoved{CartId: "c1", Sku: "a", RemovedAt: ts}}},
		{name: "reopen none", cmd: reopen(""), transition: true},
		{name: "reopen open", given: open, cmd: reopen(""), transition: true},
		{name: "reopen closed", given: done, cmd: reopen(""), transition: true},

		{name: "close after checkout", given: frozen, cmd: closeCart("co-1"), want: []proto.Message{closed}},
		{name: "close other checkout", given: frozen, cmd: closeCart("co-2"), err: domain.ErrOtherCheckout},
		{name: "close open", given: open, cmd: closeCart("co-1"), transition: true},
		{name: "close abandoned", given: gone, cmd: closeCart("co-1"), transition: true},
		{name: "close closed", given: done, cmd: closeCart("co-1"), transition: true},
		{name: "close none", cmd: closeCart("co-1"), transition: true},
	}
	// Every change is refused outside the open state (frozen carts included).
	for state, given := range states {
		for name, cmd := range map[string]command{"add": add(prod("c", 1), 1), "change": change("a", 1), "remove": remove("a"),
			"clear": clear, "checkout": requestCheckout(0), "abandon": abandon(customer, now)} {
			tests = append(tests, struct {
				name       string
				given      []proto.Message
				cmd        command
				want       []proto.Message
				err        error
				transition bool
			}{name: name + " when " + state, given: given, cmd: cmd, transition: true})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := domain.New("carts-x")
			for _, e := range tt.given {
				c = domain.Apply(c, e)
			}
			got, err := tt.cmd(c)
			if tt.err != nil && !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if domain.IsTransition(err) != tt.transition {
				t.Fatalf("IsTransition(%v) = %v, want %v", err, !tt.transition, tt.transition)
			}
			if tt.err == nil && !tt.transition && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCloneAndLines(t *testing.T) {
	c := domain.New("c1")
	for _, e := range []proto.Message{created, addedA, addedB} {
		domain.Apply(c, e)
	}
	d := c.Clone()
	domain.Apply(d, &cartsv1.LineRemoved{CartId: "c1", Sku: "a", RemovedAt: ts})
	want := []domain.Line{{SKU: "a", Name: "n-a", Quantity: 2, UnitPrice: 250}, {SKU: "b", Name: "n-b", Quantity: 1, UnitPrice: 1000}}
	if diff := cmp.Diff(want, c.Lines()); diff != "" {
		t.Fatalf("original changed by its clone (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want[1:], d.Lines()); diff != "" {
		t.Fatalf("clone (-want +got):\n%s", diff)
	}
	if c.Version() != 3 || d.Version() != 4 || d.Currency() != "EUR" || d.CustomerID() != "cus" {
		t.Fatalf("versions %d/%d, currency %q, customer %q", c.Version(), d.Version(), d.Currency(), d.CustomerID())
	}
}
