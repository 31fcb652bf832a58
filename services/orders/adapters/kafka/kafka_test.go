package kafka_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/kit/commands/commandstest"
	"github.com/keel-commerce/keel/services/orders/adapters/kafka"
	"github.com/keel-commerce/keel/services/orders/app"
)

func eur(n int64) *typesv1.Money { return &typesv1.Money{AmountMinor: n, Currency: "EUR"} }

func place(cmdID, checkout string) *ordersv1.PlaceOrder {
	return &ordersv1.PlaceOrder{CommandId: cmdID, CheckoutId: checkout, CartId: "cart-" + checkout,
		Customer:        &typesv1.Customer{CustomerId: "cus-1", Email: "a@example.com"},
		ShippingAddress: &typesv1.Address{Line1: "1 Road", City: "Berlin", CountryCode: "DE"},
		Lines:           []*ordersv1.OrderLine{{Sku: "a", Quantity: 2, UnitPrice: eur(250)}, {Sku: "b", Quantity: 1, UnitPrice: eur(1000)}}}
}

// TestCommandsOnceAndPoisonToDLQ sends every kind of command twice, plus
// a garbage record and an invalid command: each command's effect happens
// once, the refusals are answered without retry, and the two bad records
// are dead-lettered.
func TestCommandsOnceAndPoisonToDLQ(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	svc, err := app.New(ctx, st, app.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	h, err := kafka.NewHandler(svc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}

	commandstest.Run(t, commandstest.Case{Service: "orders", Pool: pool, Handler: h, NewConsumer: kafka.NewConsumer,
		// Each command twice, in order; the order id keys keep an order's
		// commands in one partition.
		Commands: []commandstest.Command{
			{Key: "order-co-1", Msg: place("c-place-1", "co-1")},
			{Key: "order-co-1", Msg: &ordersv1.ConfirmOrder{CommandId: "c-conf-1", OrderId: "order-co-1"}},
			{Key: "order-co-1", Msg: &ordersv1.MarkOrderPaid{CommandId: "c-paid-1", OrderId: "order-co-1", PaymentId: "pay-1", Amount: eur(1500)}},
			{Key: "order-co-1", Msg: &ordersv1.ShipOrder{CommandId: "c-ship-1", OrderId: "order-co-1", ShipmentId: "shp-1", Carrier: "dhl", TrackingNumber: "T1"}},
			{Key: "order-co-2", Msg: place("c-place-2", "co-2")},
			{Key: "order-co-2", Msg: &ordersv1.CancelOrder{CommandId: "c-cancel-2", OrderId: "order-co-2",
				Reason: ordersv1.CancelReason_CANCEL_REASON_PAYMENT_FAILED, Detail: "declined"}},
			{Key: "order-co-2", Msg: &ordersv1.ShipOrder{CommandId: "c-ship-2", OrderId: "order-co-2", ShipmentId: "shp-2", Carrier: "dhl"}}, // refused: cancelled
			{Key: "order-none", Msg: &ordersv1.CancelOrder{CommandId: "c-cancel-x", OrderId: "order-none",
				Reason: ordersv1.CancelReason_CANCEL_REASON_OPERATOR}}, // refused: never placed
		},
		// Ids of the commands above (keyed like them, so they come after
		// them) reused for another command: refused, not replayed.
		Reused: []commandstest.Command{
			{Key: "order-co-1", Msg: &ordersv1.CancelOrder{CommandId: "c-conf-1", OrderId: "order-co-1",
				Reason: ordersv1.CancelReason_CANCEL_REASON_OPERATOR}},
			{Key: "order-co-2", Msg: place("c-place-2", "co-3")},
		},
		Poison: []*kgo.Record{
			commandstest.Garbage("order-co-1", "keel.orders.v1.ConfirmOrder"),
			commandstest.Record(t, "order-co-1", &ordersv1.ConfirmOrder{CommandId: "c-bad"}), // no order id
		},
		// Effects once, exactly: two orders placed, one confirmed, paid and
		// shipped, the other cancelled; the refused ship is stored, the
		// cancel of an order never placed is not.
		Accepted: 6, Refused: 6, Events: 6, Processed: 7,
	})

	for id, want := range map[string]string{"order-co-1": "shipped", "order-co-2": "cancelled"} {
		v, err := svc.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if v.Status != want {
			t.Errorf("%s: status %s, want %s", id, v.Status, want)
		}
	}
}
