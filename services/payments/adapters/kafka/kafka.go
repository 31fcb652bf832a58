// Package kafka consumes the payments service's commands from Kafka
// (payments.commands, sent by the checkout saga) with the events/consume
// runtime: PostgreSQL checkpoints, retries with backoff, dead letters.
//
// A record's value is a protobuf command of keel.payments.v1
// (AuthorizePayment, CapturePayment, VoidPayment, RefundPayment), its type
// named by the ce_type header (see events/wire); the key should be the
// payment id (or the order id), so one payment's commands stay in order.
//
// Delivery is at least once; effects are once. The command's own
// command_id is its id in the payments app, which decides each id once
// and stores the outcome with the events; the provider is called with an
// idempotency key derived from ids, never from the delivery, so a
// redelivered record (a retry, a rebalance, a replay from an old
// checkpoint) neither charges twice nor records twice. The command runs in
// its own transactions, not the consumer's batch transaction: if the
// process dies between the commits the record comes again and the stored
// intent and outcome complete it.
//
// Outcomes:
//
//   - accepted: the events go to payments.events through the relay; a
//     declined or timed-out authorization is an accepted command (its
//     PaymentDeclined or PaymentAuthorizationTimedOut event is the answer);
//   - refused by the domain (illegal transition, amount above the
//     authorized, provider declined a capture, ...): a normal outcome,
//     logged and not retried; the refusal is stored under the command id,
//     so a redelivery answers the same. A command for a payment never
//     attempted (app.ErrNotFound) is refused the same way, though nothing
//     is stored for it;
//   - undecodable record, unknown type, invalid command (no command id or
//     payment id): consume.Permanent, dead-lettered at once;
//   - anything else, notably a capture, void or refund the provider did
//     not answer (app.ErrGatewayTimeout, app.ErrGateway) or the database
//     down: returned, so the runtime retries the same command id, which
//     completes it without acting twice.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consume"
	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	"github.com/keel-commerce/keel/events/wire"
	"github.com/keel-commerce/keel/services/payments/app"
)

// Group is the consumer group of the payments commands consumer. Renaming
// it restarts consumption from the start of the topic (harmless, since
// commands are decided once, but slow).
const Group = "payments-commands"

// Outcome of one command record.
type Outcome string

// Outcomes reported to Handler.OnOutcome.
const (
	Accepted Outcome = "accepted"
	Replayed Outcome = "replayed"
	Refused  Outcome = "refused"
)

// Handler turns payments command records into app commands. It is a
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
		return consume.Permanent(fmt.Errorf("payments command at %s/%d@%d: no %s header", rec.Topic, rec.Partition, rec.Offset, wire.HeaderType))
	}
	msg, err := h.reg.Decode(typ, rec.Value)
	if err != nil {
		return consume.Permanent(fmt.Errorf("payments command at %s/%d@%d: %w", rec.Topic, rec.Partition, rec.Offset, err))
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
		return consume.Permanent(fmt.Errorf("payments command %s (%s): %w", id, typ, err))
	case command.IsRejection(err), errors.Is(err, app.ErrNotFound):
		// A refusal is an answer, not a failure: retrying cannot change it.
		h.log.InfoContext(ctx, "payments command refused", "command_id", id, "type", typ, "reason", err)
		h.report(id, Refused, err)
		return nil
	default:
		return fmt.Errorf("payments command %s (%s): %w", id, typ, err)
	}
}

func (h *Handler) report(id string, o Outcome, err error) {
	if h.OnOutcome != nil {
		h.OnOutcome(id, o, err)
	}
}

var errNotACommand = errors.New("not an payments command")

func (h *Handler) execute(ctx context.Context, msg any) (string, command.Result, error) {
	switch m := msg.(type) {
	case *paymentsv1.AuthorizePayment:
		res, err := h.svc.Authorize(ctx, m)
		return m.GetCommandId(), res, err
	case *paymentsv1.CapturePayment:
		res, err := h.svc.Capture(ctx, m)
		return m.GetCommandId(), res, err
	case *paymentsv1.VoidPayment:
		res, err := h.svc.Void(ctx, m)
		return m.GetCommandId(), res, err
	case *paymentsv1.RefundPayment:
		res, err := h.svc.Refund(ctx, m)
		return m.GetCommandId(), res, err
	}
	return "", command.Result{}, fmt.Errorf("%w: %T", errNotACommand, msg)
}

// Config configures the commands consumer; see consume.Config for the
// runtime's fields (Brokers, Pool, Logger, Registerer, Retry, KafkaOpts).
// Group defaults to Group, Topics to [payments.commands].
type Config = consume.Config

// NewConsumer returns the consumer of payments commands running h. The
// command topics and their dead-letter topics must exist.
func NewConsumer(cfg Config, h *Handler) (*consume.Consumer, error) {
	if cfg.Group == "" {
		cfg.Group = Group
	}
	if len(cfg.Topics) == 0 {
		cfg.Topics = []string{"payments.commands"}
	}
	return consume.New(cfg, h)
}
