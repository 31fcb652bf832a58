// Package kafka consumes the stock service's commands from Kafka
// (stock.commands, sent by the checkout saga) with the events/consume
// runtime: PostgreSQL checkpoints, retries with backoff, dead letters.
//
// A record's value is a protobuf command of keel.stock.v1 (ReceiveStock,
// AdjustStock, ReserveStock, ReleaseReservation, CommitReservation), its
// type named by the ce_type header (see events/wire). The saga keys its
// commands by its outbox stream, outbox-<checkout id>, so one checkout's
// (one order's) commands stay in order; nothing here depends on the key.
//
// Delivery is at least once; effects are once. The command's own
// command_id is its id in the stock app, which decides each id once and
// stores the outcome with the events, so a redelivered record (a retry, a
// rebalance, a replay from an old checkpoint) changes nothing. The command
// runs in its own transaction, not the consumer's batch transaction: if
// the process dies between the two commits the record comes again and is
// answered from the stored outcome.
//
// Outcomes:
//
//   - accepted: the events go to stock.events through the relay;
//   - refused by the domain (insufficient stock, unknown reservation, ...):
//     a normal outcome, logged and not retried; the refusal is stored under
//     the command id (except for an order that never reserved anything,
//     which has no stream to decide on), so a redelivery answers the same.
//     A ReserveStock refused for want of stock also records
//     AllocationFailed (stream allocation-<order id>, every short line),
//     once per command id, so the saga compensates at once instead of on
//     its deadline;
//   - undecodable record, unknown type, invalid command (no id, zero
//     quantity): consume.Permanent, dead-lettered at once;
//   - anything else (database down): returned, so the runtime retries.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consume"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/services/kit/commands"
	"github.com/keel-commerce/keel/services/stock/app"
	"google.golang.org/protobuf/proto"
)

// Group is the consumer group of the stock commands consumer. Renaming it
// restarts consumption from the start of the topic (harmless, since
// commands are decided once, but slow).
const Group = "stock-commands"

// Outcome of one command record (see package commands).
type Outcome = commands.Outcome

// Outcomes reported to Handler.OnOutcome.
const (
	Accepted = commands.Accepted
	Replayed = commands.Replayed
	Refused  = commands.Refused
)

// Handler runs stock command records: a consume.Handler, safe for
// concurrent use.
type Handler = commands.Handler

// NewHandler returns a Handler executing commands on svc.
func NewHandler(svc *app.Service, logger *slog.Logger) (*Handler, error) {
	reg, err := app.Registry()
	if err != nil {
		return nil, err
	}
	return &Handler{Context: "stock", Registry: reg, Execute: executor{svc}.execute, Log: logger,
		Invalid: func(err error) bool { return errors.Is(err, app.ErrInvalid) },
		Refusal: func(err error) bool { return errors.Is(err, app.ErrUnknownOrder) },
	}, nil
}

// executor maps each stock command message to the app.
type executor struct{ svc *app.Service }

func (h executor) execute(ctx context.Context, msg proto.Message) (string, command.Result, error) {
	switch m := msg.(type) {
	case *stockv1.ReceiveStock:
		res, err := h.svc.Receive(ctx, app.Receive{CommandID: m.GetCommandId(), SKU: m.GetSku(), Warehouse: m.GetWarehouseId(),
			Quantity: m.GetQuantity(), Reference: m.GetReference()})
		return m.GetCommandId(), res, err
	case *stockv1.AdjustStock:
		res, err := h.svc.Adjust(ctx, app.Adjust{CommandID: m.GetCommandId(), SKU: m.GetSku(), Warehouse: m.GetWarehouseId(),
			Delta: m.GetDelta(), Reason: m.GetReason(), Note: m.GetNote()})
		return m.GetCommandId(), res, err
	case *stockv1.ReserveStock:
		// The saga learns the outcome from stock.events: a shortage is
		// recorded (AllocationFailed), not only refused.
		c := app.Reserve{CommandID: m.GetCommandId(), OrderID: m.GetOrderId(), CheckoutID: m.GetCheckoutId(), RecordFailure: true}
		for _, l := range m.GetLines() {
			c.Lines = append(c.Lines, app.Line{SKU: l.GetSku(), Quantity: l.GetQuantity()})
		}
		if m.GetTtl() != nil {
			if err := m.GetTtl().CheckValid(); err != nil {
				return m.GetCommandId(), command.Result{}, fmt.Errorf("%w: ttl: %v", app.ErrInvalid, err)
			}
			if c.TTL = m.GetTtl().AsDuration(); c.TTL <= 0 {
				return m.GetCommandId(), command.Result{}, fmt.Errorf("%w: ttl must be positive", app.ErrInvalid)
			}
		}
		res, err := h.svc.Reserve(ctx, c)
		return m.GetCommandId(), res, err
	case *stockv1.ReleaseReservation:
		res, err := h.svc.Release(ctx, app.Release{CommandID: m.GetCommandId(), OrderID: m.GetOrderId(),
			ReservationIDs: m.GetReservationIds(), Reason: m.GetReason()})
		return m.GetCommandId(), res, err
	case *stockv1.CommitReservation:
		res, err := h.svc.Commit(ctx, app.Commit{CommandID: m.GetCommandId(), OrderID: m.GetOrderId(),
			ReservationIDs: m.GetReservationIds()})
		return m.GetCommandId(), res, err
	}
	return "", command.Result{}, commands.NotACommand(msg)
}

// Config configures the commands consumer; see consume.Config for the
// runtime's fields (Brokers, Pool, Logger, Registerer, Retry, KafkaOpts).
// Group defaults to Group, Topics to [stock.commands].
type Config = consume.Config

// NewConsumer returns the consumer of stock commands running h. The
// command topics and their dead-letter topics must exist.
func NewConsumer(cfg Config, h *Handler) (*consume.Consumer, error) {
	return commands.NewConsumer(cfg, h, Group, "stock.commands")
}
