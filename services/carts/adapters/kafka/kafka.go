// Package kafka consumes the carts service's commands from Kafka
// (carts.commands, sent by the checkout saga once a checkout ends) with
// the events/consume runtime: PostgreSQL checkpoints, retries with
// backoff, dead letters.
//
// A record's value is a protobuf command of keel.carts.v1, ReopenCart (the
// checkout failed: unfreeze the cart) or CloseCart (the checkout became an
// order), its type named by the ce_type header (see events/wire); the key
// should be the cart id, so one cart's commands stay in order. The other
// cart commands are the shopper's, taken over HTTP only: on this topic
// they are dead-lettered like an unknown type.
//
// Delivery is at least once; effects are once. The command's own
// command_id is its id in the carts app, which decides each id once and
// stores the outcome with the events, so a redelivered record (a retry, a
// rebalance, a replay from an old checkpoint) changes nothing. The command
// runs in its own transaction, not the consumer's batch transaction: if
// the process dies between the two commits the record comes again and is
// answered from the stored outcome.
//
// Outcomes:
//
//   - accepted: the events go to carts.events through the relay;
//   - refused by the domain (unknown cart, cart not checking out, another
//     checkout's cart, ...): a normal outcome, logged and not retried; the
//     refusal is stored under the command id, so a redelivery answers the
//     same;
//   - undecodable record, unknown or shopper-only type, invalid command
//     (no command id, cart id, or for CloseCart no checkout or order id):
//     consume.Permanent, dead-lettered at once;
//   - anything else (database down): returned, so the runtime retries.
package kafka

import (
	"context"
	"errors"
	"log/slog"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consume"
	"github.com/keel-commerce/keel/services/carts/app"
	"github.com/keel-commerce/keel/services/kit/commands"
	"google.golang.org/protobuf/proto"
)

// Group is the consumer group of the carts commands consumer. Renaming
// it restarts consumption from the start of the topic (harmless, since
// commands are decided once, but slow).
const Group = "carts-commands"

// Outcome of one command record (see package commands).
type Outcome = commands.Outcome

// Outcomes reported to Handler.OnOutcome.
const (
	Accepted = commands.Accepted
	Replayed = commands.Replayed
	Refused  = commands.Refused
)

// Handler runs carts command records: a consume.Handler, safe for
// concurrent use.
type Handler = commands.Handler

// NewHandler returns a Handler executing commands on svc.
func NewHandler(svc *app.Service, logger *slog.Logger) (*Handler, error) {
	reg, err := app.Registry()
	if err != nil {
		return nil, err
	}
	return &Handler{Context: "carts", Registry: reg, Execute: executor{svc}.execute, Log: logger,
		Invalid: func(err error) bool { return errors.Is(err, app.ErrInvalid) },
	}, nil
}

// executor maps each carts command message to the app.
type executor struct{ svc *app.Service }

func (h executor) execute(ctx context.Context, msg proto.Message) (string, command.Result, error) {
	switch m := msg.(type) {
	case *cartsv1.ReopenCart:
		res, err := h.svc.Reopen(ctx, app.Reopen{CommandID: m.GetCommandId(), CartID: m.GetCartId(),
			CheckoutID: m.GetCheckoutId(), Reason: m.GetReason()})
		return m.GetCommandId(), res, err
	case *cartsv1.CloseCart:
		res, err := h.svc.CloseCart(ctx, app.Close{CommandID: m.GetCommandId(), CartID: m.GetCartId(),
			CheckoutID: m.GetCheckoutId(), OrderID: m.GetOrderId()})
		return m.GetCommandId(), res, err
	}
	return "", command.Result{}, commands.NotACommand(msg)
}

// Config configures the commands consumer; see consume.Config for the
// runtime's fields (Brokers, Pool, Logger, Registerer, Retry, KafkaOpts).
// Group defaults to Group, Topics to [carts.commands].
type Config = consume.Config

// NewConsumer returns the consumer of carts commands running h. The
// command topics and their dead-letter topics must exist.
func NewConsumer(cfg Config, h *Handler) (*consume.Consumer, error) {
	return commands.NewConsumer(cfg, h, Group, "carts.commands")
}
