package kafka_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/services/kit/commands/commandstest"
	"github.com/keel-commerce/keel/services/payments/adapters/kafka"
	"github.com/keel-commerce/keel/services/payments/app"
	"github.com/keel-commerce/keel/services/payments/gateway/sim"
)

func eur(n int64) *typesv1.Money { return &typesv1.Money{AmountMinor: n, Currency: "EUR"} }

func authorize(cmdID, payment string, amount int64) *paymentsv1.AuthorizePayment {
	return &paymentsv1.AuthorizePayment{CommandId: cmdID, PaymentId: payment, OrderId: "order-" + payment, Amount: eur(amount),
		PaymentMethod: &typesv1.PaymentMethod{Kind: typesv1.PaymentMethodKind_PAYMENT_METHOD_KIND_CARD, Token: "tok"}}
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
	gw, err := sim.New(sim.Config{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := app.New(ctx, st, app.Config{Gateway: gw})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	h, err := kafka.NewHandler(svc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}

	commandstest.Run(t, commandstest.Case{Service: "payments", Pool: pool, Handler: h, NewConsumer: kafka.NewConsumer,
		// Each command twice, in order; the payment id keys keep a
		// payment's commands in one partition.
		Commands: []commandstest.Command{
			{Key: "p-1", Msg: authorize("c-auth-1", "p-1", 1000)},
			{Key: "p-1", Msg: &paymentsv1.CapturePayment{CommandId: "c-cap-1", PaymentId: "p-1"}},
			{Key: "p-1", Msg: &paymentsv1.RefundPayment{CommandId: "c-ref-1", PaymentId: "p-1", RefundId: "r-1", Amount: eur(400), Reason: "returned"}},
			{Key: "p-2", Msg: authorize("c-auth-2", "p-2", 500)},
			{Key: "p-2", Msg: &paymentsv1.VoidPayment{CommandId: "c-void-2", PaymentId: "p-2", Reason: "out of stock"}},
			{Key: "p-2", Msg: &paymentsv1.CapturePayment{CommandId: "c-cap-2", PaymentId: "p-2"}},     // refused: voided
			{Key: "p-none", Msg: &paymentsv1.VoidPayment{CommandId: "c-void-x", PaymentId: "p-none"}}, // refused: never attempted
		},
		// Ids of the commands above (keyed like them, so they come after
		// them) reused for another command: refused, never charged.
		Reused: []commandstest.Command{
			{Key: "p-1", Msg: &paymentsv1.RefundPayment{CommandId: "c-ref-1", PaymentId: "p-1", RefundId: "r-1", Amount: eur(500), Reason: "returned"}},
			{Key: "p-2", Msg: authorize("c-auth-2", "p-3", 500)},
		},
		Poison: []*kgo.Record{
			commandstest.Garbage("p-1", "keel.payments.v1.CapturePayment"),
			commandstest.Record(t, "p-1", &paymentsv1.CapturePayment{CommandId: "c-bad"}), // no payment id
		},
		// Effects once, exactly: p-1 authorized, captured and partly
		// refunded, p-2 authorized and voided. Each accepted command stores
		// its intent and its outcome; the refused capture is stored, the
		// void of a payment never attempted is not.
		Accepted: 5, Refused: 6, Events: 5, Processed: 11,
	})

	v, err := svc.Get(ctx, "p-1")
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != "captured" || v.CapturedMinor != 1000 || v.RefundedMinor != 400 {
		t.Errorf("p-1 = %+v, want captured 1000, refunded 400", v)
	}
	if v, err := svc.Get(ctx, "p-2"); err != nil || v.Status != "voided" {
		t.Errorf("p-2 = %+v, %v; want voided", v, err)
	}
}
