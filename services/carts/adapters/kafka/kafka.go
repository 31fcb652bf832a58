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
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consume"
	"github.com/keel-commerce/keel/events/wire"
	"github.com/keel-commerce/keel/services/carts/app"
)

// Group is the consumer group of the carts commands consumer. Renaming
// it restarts consumption from the start of the topic (harmless, since
// commands are decided once, but slow).
const Group = "carts-commands"

// Outcome of one command record.
type Outcome string

// Outcomes reported to Handler.OnOutcome.
const (
	Accepted Outcome = "accepted"
	Replayed Outcome = "replayed"
	Refused  Outcome = "refused"
)

// Handler turns carts command records into app commands. It is a
// consume.Handler and safe for concurrent use.
type Handler struct {
	svc *app.Service
	reg *codec.Registry
	log *slog.Logger
	// OnOutcome, when set, is called after each decided command (tests,
	// metrics); it must not block.
	OnOutcome func(commandID string, o Outcome, err error)
}

// NewHandler returns a Handler executing commands on svc.
func NewHandler(svc *app.Service, logger *slog.Logger) (*Handler, error) {
	reg, err := app.Registry()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{svc: svc, reg: reg, log: logger}, nil
}

func header(rec *kgo.Record, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Handle decodes and executes one command record. tx is the consumer's
// batch transaction; the command does not use it (see the package comment).
func (h *Handler) Handle(ctx context.Context, _ pgx.Tx, rec *kgo.Record) error {
	typ := header(rec, wire.HeaderType)
	if typ == "" {
		return consume.Permanent(fmt.Errorf("carts command at %s/%d@%d: no %s header", rec.Topic, rec.Partition, rec.Offset, wire.HeaderType))
	}
	msg, err := h.reg.Decode(typ, rec.Value)
	if err != nil {
		return consume.Permanent(fmt.Errorf("carts command at %s/%d@%d: %w", rec.Topic, rec.Partition, rec.Offset, err))
	}
	id, res, err := h.execute(ctx, msg)
	switch {
	case err == nil:
		o := Accepted
		if res.Replayed {
			o = Replayed
		}
		h.report(id, o, nil)
		return nil
	case errors.Is(err, errNotACommand), errors.Is(err, app.ErrInvalid), errors.Is(err, command.ErrInvalidCommand):
		return consume.Permanent(fmt.Errorf("carts command %s (%s): %w", id, typ, err))
	case command.IsRejection(err):
		// A refusal is an answer, not a failure: retrying cannot change it.
		h.log.InfoContext(ctx, "carts command refused", "command_id", id, "type", typ, "reason", err)
		h.report(id, Refused, err)
		return nil
	default:
		return fmt.Errorf("carts command %s (%s): %w", id, typ, err)
	}
}

func (h *Handler) report(id string, o Outcome, err error) {
	if h.OnOutcome != nil {
		h.OnOutcome(id, o, err)
	}
}

var errNotACommand = errors.New("not an carts command")

func (h *Handler) execute(ctx context.Context, msg any) (string, command.Result, error) {
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
	return "", command.Result{}, fmt.Errorf("%w: %T", errNotACommand, msg)
}

// Config configures the commands consumer; see consume.Config for the
// runtime's fields (Brokers, Pool, Logger, Registerer, Retry, KafkaOpts).
// Group defaults to Group, Topics to [carts.commands].
type Config = consume.Config

// NewConsumer returns the consumer of carts commands running h. The
// command topics and their dead-letter topics must exist.
func NewConsumer(cfg Config, h *Handler) (*consume.Consumer, error) {
	if cfg.Group == "" {
		cfg.Group = Group
	}
	if len(cfg.Topics) == 0 {
		cfg.Topics = []string{"carts.commands"}
	}
	return consume.New(cfg, h)
}
