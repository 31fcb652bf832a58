package kafka_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/carts/adapters/kafka"
	"github.com/keel-commerce/keel/services/carts/app"
	"github.com/keel-commerce/keel/services/carts/domain"
	"github.com/keel-commerce/keel/services/kit/commands/commandstest"
)

// prices is an in-memory catalog: every SKU costs 100 cents in EUR.
type prices struct{}

func (prices) Product(_ context.Context, sku string) (domain.Product, error) {
	return domain.Product{SKU: sku, Name: "Product " + sku, UnitPrice: &typesv1.Money{AmountMinor: 100, Currency: "EUR"}}, nil
}

// checkingOut creates cart id with one line and freezes it for checkout.
func checkingOut(t *testing.T, svc *app.Service, id, checkout string) {
	t.Helper()
	ctx := context.Background()
	if _, err := svc.Create(ctx, app.Create{CommandID: id + ":create", CartID: id, CustomerID: "cus-1", Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AddLine(ctx, app.AddLine{CommandID: id + ":add", CartID: id, SKU: "SKU-1", Quantity: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RequestCheckout(ctx, app.RequestCheckout{CommandID: id + ":checkout", CartID: id, CheckoutID: checkout,
		Customer:        &typesv1.Customer{CustomerId: "cus-1"},
		ShippingAddress: &typesv1.Address{Line1: "1 Road", City: "Berlin", CountryCode: "DE"},
		PaymentMethod:   &typesv1.PaymentMethod{Kind: typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_CARD, Token: "tok"}}); err != nil {
		t.Fatal(err)
	}
}

// TestCommandsOnceAndPoisonToDLQ sends every kind of command twice, plus
// a garbage record, an invalid command and a shopper's command: each command's effect happens
// once, the refusals are answered without retry, the three bad records
// are dead-lettered, and ids reused for other commands are refused.
func TestCommandsOnceAndPoisonToDLQ(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	svc, err := app.New(ctx, st, prices{}, app.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	checkingOut(t, svc, "cart-1", "co-1")
	checkingOut(t, svc, "cart-2", "co-2")
	h, err := kafka.NewHandler(svc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}

	commandstest.Run(t, commandstest.Case{Service: "carts", Pool: pool, Handler: h, NewConsumer: kafka.NewConsumer,
		// Each command twice, in order; the cart id keys keep a cart's
		// commands in one partition.
		Commands: []commandstest.Command{
			{Key: "cart-1", Msg: &cartsv1.CloseCart{CommandId: "c-close-1", CartId: "cart-1", CheckoutId: "co-1", OrderId: "order-co-1"}},
			{Key: "cart-2", Msg: &cartsv1.ReopenCart{CommandId: "c-reopen-2", CartId: "cart-2", CheckoutId: "co-2", Reason: "payment failed"}},
			{Key: "cart-2", Msg: &cartsv1.CloseCart{CommandId: "c-close-2", CartId: "cart-2", CheckoutId: "co-2", OrderId: "order-co-2"}}, // refused: open again
			{Key: "cart-none", Msg: &cartsv1.ReopenCart{CommandId: "c-reopen-x", CartId: "cart-none", CheckoutId: "co-x"}},                // refused: unknown cart
		},
		// The id that closed cart-1 (or cart-1's set-up checkout), reused
		// (keyed like the first, so it comes after it): refused, never
		// replayed as the first command's answer.
		Reused: []commandstest.Command{
			{Key: "cart-1", Msg: &cartsv1.ReopenCart{CommandId: "c-close-1", CartId: "cart-2", CheckoutId: "co-2", Reason: "retry"}},
			{Key: "cart-1", Msg: &cartsv1.ReopenCart{CommandId: "cart-1:checkout", CartId: "cart-1", CheckoutId: "co-1", Reason: "x"}},
		},
		Poison: []*kgo.Record{
			commandstest.Garbage("cart-1", "keel.carts.v1.CloseCart"),
			commandstest.Record(t, "cart-1", &cartsv1.CloseCart{CommandId: "c-bad", CartId: "cart-1"}),   // no checkout or order id
			commandstest.Record(t, "cart-1", &cartsv1.ClearCart{CommandId: "c-clear", CartId: "cart-1"}), // a shopper's command: HTTP only
		},
		// Effects once, exactly: the set-up's 6 commands and events, then
		// one close and one reopen; both refusals are stored.
		Accepted: 2, Refused: 6, Events: 8, Processed: 10,
	})

	for id, want := range map[string]string{"cart-1": "closed", "cart-2": "open"} {
		v, err := svc.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if v.Status != want {
			t.Errorf("%s: status %s, want %s", id, v.Status, want)
		}
	}
}
