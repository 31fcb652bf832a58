// Package kafka consumes the orders service's commands from Kafka
// (orders.commands, sent by the checkout saga) with the events/consume
// runtime: PostgreSQL checkpoints, retries with backoff, dead letters.
//
// A record's value is a protobuf command of keel.orders.v1 (PlaceOrder,
// ConfirmOrder, MarkOrderPaid, CancelOrder, ShipOrder), its type named by
// the ce_type header (see events/wire). The saga keys its commands by its
// outbox stream, outbox-<checkout id>, so one checkout's (and so one
// order's) commands stay in order; nothing here depends on the key.
//
// Delivery is at least once; effects are once. The command's own
// command_id is its id in the orders app, which decides each id once and
// stores the outcome with the events, so a redelivered record (a retry, a
// rebalance, a replay from an old checkpoint) changes nothing. The command
// runs in its own transaction, not the consumer's batch transaction: if
// the process dies between the two commits the record comes again and is
// answered from the stored outcome.
//
// Outcomes:
//
//   - accepted: the events go to orders.events through the relay;
//   - refused by the domain (illegal transition, amount mismatch, ...): a
//     normal outcome, logged and not retried; the refusal is stored under
//     the command id, so a redelivery answers the same. A command for an
//     order never placed (app.ErrNotFound, e.g. a CancelOrder compensating
//     a PlaceOrder that was refused) is refused the same way, though
//     nothing is stored for it;
//   - undecodable record, unknown type, invalid command (no command id, no
//     order or checkout id): consume.Permanent, dead-lettered at once;
//   - anything else (database down): returned, so the runtime retries.
package kafka

import (
	"context"
	"errors"
	"log/slog"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consume"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"github.com/keel-commerce/keel/services/kit/commands"
	"github.com/keel-commerce/keel/services/orders/app"
	"google.golang.org/protobuf/proto"
)

// Group is the consumer group of the orders commands consumer. Renaming
// it restarts consumption from the start of the topic (harmless, since
// commands are decided once, but slow).
const Group = "orders-commands"

// Outcome of one command record (see package commands).
type Outcome = commands.Outcome

// Outcomes reported to Handler.OnOutcome.
const (
	Accepted = commands.Accepted
	Replayed = commands.Replayed
	Refused  = commands.Refused
)

// Handler runs orders command records: a consume.Handler, safe for
// concurrent use.
type Handler = commands.Handler

// NewHandler returns a Handler executing commands on svc.
func NewHandler(svc *app.Service, logger *slog.Logger) (*Handler, error) {
	reg, err := app.Registry()
	if err != nil {
		return nil, err
	}
	return &Handler{Context: "orders", Registry: reg, Execute: executor{svc}.execute, Log: logger,
		Invalid: func(err error) bool { return errors.Is(err, app.ErrInvalid) },
		Refusal: func(err error) bool { return errors.Is(err, app.ErrNotFound) },
	}, nil
}

// executor maps each orders command message to the app.
type executor struct{ svc *app.Service }

func (h executor) execute(ctx context.Context, msg proto.Message) (string, command.Result, error) {
	switch m := msg.(type) {
	case *ordersv1.PlaceOrder:
		res, err := h.svc.Place(ctx, m)
		return m.GetCommandId(), res, err
	case *ordersv1.ConfirmOrder:
		res, err := h.svc.Confirm(ctx, m)
		return m.GetCommandId(), res, err
	case *ordersv1.MarkOrderPaid:
		res, err := h.svc.MarkPaid(ctx, m)
		return m.GetCommandId(), res, err
	case *ordersv1.CancelOrder:
		res, err := h.svc.Cancel(ctx, m)
		return m.GetCommandId(), res, err
	case *ordersv1.ShipOrder:
		res, err := h.svc.Ship(ctx, m)
		return m.GetCommandId(), res, err
	}
	return "", command.Result{}, commands.NotACommand(msg)
}

// Config configures the commands consumer; see consume.Config for the
// runtime's fields (Brokers, Pool, Logger, Registerer, Retry, KafkaOpts).
// Group defaults to Group, Topics to [orders.commands].
type Config = consume.Config

// NewConsumer returns the consumer of orders commands running h. The
// command topics and their dead-letter topics must exist.
func NewConsumer(cfg Config, h *Handler) (*consume.Consumer, error) {
	return commands.NewConsumer(cfg, h, Group, "orders.commands")
}
