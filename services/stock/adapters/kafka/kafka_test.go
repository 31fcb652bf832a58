package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"

	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/services/kit/commands/commandstest"
	"github.com/keel-commerce/keel/services/stock/adapters/kafka"
	"github.com/keel-commerce/keel/services/stock/app"
)

// TestCommandsOnceAndPoisonToDLQ sends every kind of command twice, plus
// a garbage record and an invalid command: each command's effect happens
// once, the refusal is answered without retry, and the two bad records are
// dead-lettered; a command id reused for another command is refused.
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

	commandstest.Run(t, commandstest.Case{Service: "stock", Pool: pool, Handler: h, NewConsumer: kafka.NewConsumer,
		// Each command twice, in order; keys keep an aggregate in one partition.
		Commands: []commandstest.Command{
			{Key: "SKU-1", Msg: &stockv1.ReceiveStock{CommandId: "c-rcv-1", Sku: "SKU-1", WarehouseId: "wh-1", Quantity: 5}},
			{Key: "SKU-1", Msg: &stockv1.ReceiveStock{CommandId: "c-rcv-2", Sku: "SKU-1", WarehouseId: "wh-2", Quantity: 5}},
			{Key: "SKU-1", Msg: &stockv1.AdjustStock{CommandId: "c-adj-1", Sku: "SKU-1", WarehouseId: "wh-1", Delta: -1,
				Reason: stockv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGED}},
			{Key: "SKU-1", Msg: &stockv1.ReserveStock{CommandId: "c-res-1", OrderId: "o-1", Lines: []*stockv1.StockLine{{Sku: "SKU-1", Quantity: 3}},
				Ttl: durationpb.New(time.Hour)}},
			{Key: "SKU-1", Msg: &stockv1.ReserveStock{CommandId: "c-res-2", OrderId: "o-2", Lines: []*stockv1.StockLine{{Sku: "SKU-1", Quantity: 2}}}},
			{Key: "SKU-1", Msg: &stockv1.ReserveStock{CommandId: "c-res-3", OrderId: "o-3", Lines: []*stockv1.StockLine{{Sku: "SKU-1", Quantity: 100}}}}, // refused
			{Key: "SKU-1", Msg: &stockv1.CommitReservation{CommandId: "c-com-1", OrderId: "o-1"}},
			{Key: "SKU-1", Msg: &stockv1.ReleaseReservation{CommandId: "c-rel-2", OrderId: "o-2",
				Reason: stockv1.ReleaseReason_RELEASE_REASON_PAYMENT_FAILED}},
		},
		// Ids of the commands above, reused for another command (keyed like
		// the first, so they come after it): refused,
		// never applied (was: the reservation answered from the receipt's
		// empty response and failed, the adjustment replayed and was lost).
		Reused: []commandstest.Command{
			{Key: "SKU-1", Msg: &stockv1.ReserveStock{CommandId: "c-rcv-1", OrderId: "o-9", Lines: []*stockv1.StockLine{{Sku: "SKU-1", Quantity: 1}}}},
			{Key: "SKU-1", Msg: &stockv1.AdjustStock{CommandId: "c-adj-1", Sku: "SKU-2", WarehouseId: "wh-1", Delta: 4,
				Reason: stockv1.AdjustmentReason_ADJUSTMENT_REASON_FOUND}},
		},
		Poison: []*kgo.Record{
			commandstest.Garbage("SKU-1", "keel.stock.v1.ReceiveStock"),
			commandstest.Record(t, "SKU-1", &stockv1.ReceiveStock{CommandId: "c-bad", Sku: "SKU-1", WarehouseId: "wh-1", Quantity: 0}),
		},
		// Effects once, exactly: 2 receipts, 1 adjustment, 2 reservations,
		// 1 commit, 1 release; the refused reservation reserved nothing and
		// recorded one AllocationFailed; the reused ids changed nothing.
		Accepted: 7, Refused: 4, Events: 8, Processed: 8,
	})

	var failed int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'keel.stock.v1.AllocationFailed'`,
		app.AllocationStream("o-3")).Scan(&failed); err != nil {
		t.Fatal(err)
	}
	if failed != 1 {
		t.Errorf("AllocationFailed of o-3 recorded %d times, want once", failed)
	}
	s, err := svc.Get(ctx, "SKU-1")
	if err != nil {
		t.Fatal(err)
	}
	wh := s.Warehouses()
	if got := fmt.Sprint(wh["wh-1"].OnHand+wh["wh-2"].OnHand, s.Available(), len(s.Reservations())); got != "6 6 0" {
		t.Errorf("on hand, available, open reservations = %s, want 6 6 0 (10 received, 1 damaged, 3 committed)", got)
	}
}
