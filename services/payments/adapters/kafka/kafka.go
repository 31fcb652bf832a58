// Package kafka consumes the payments service's commands from Kafka
// (payments.commands, sent by the checkout saga) with the events/consume
// runtime: PostgreSQL checkpoints, retries with backoff, dead letters.
//
// A record's value is a protobuf command of keel.payments.v1
// (AuthorizePayment, CapturePayment, VoidPayment, RefundPayment), its type
// named by the ce_type header (see events/wire). The saga keys its commands
// by its outbox stream, outbox-<checkout id>, so one checkout's (and so one
// payment's) commands stay in order; nothing here depends on the key.
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
	"log/slog"

	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consume"
	paymentsv1 "github.com/keel-commerce/keel/events/payments/v1"
	"github.com/keel-commerce/keel/services/kit/commands"
	"github.com/keel-commerce/keel/services/payments/app"
	"google.golang.org/protobuf/proto"
)

// Group is the consumer group of the payments commands consumer. Renaming
// it restarts consumption from the start of the topic (harmless, since
// commands are decided once, but slow).
const Group = "payments-commands"

// Outcome of one command record (see package commands).
type Outcome = commands.Outcome

// Outcomes reported to Handler.OnOutcome.
const (
	Accepted = commands.Accepted
	Replayed = commands.Replayed
	Refused  = commands.Refused
)

// Handler runs payments command records: a consume.Handler, safe for
// concurrent use.
type Handler = commands.Handler

// NewHandler returns a Handler executing commands on svc.
func NewHandler(svc *app.Service, logger *slog.Logger) (*Handler, error) {
	reg, err := app.Registry()
	if err != nil {
		return nil, err
	}
	return &Handler{Context: "payments", Registry: reg, Execute: executor{svc}.execute, Log: logger,
		Invalid: func(err error) bool { return errors.Is(err, app.ErrInvalid) },
		Refusal: func(err error) bool { return errors.Is(err, app.ErrNotFound) },
	}, nil
}

// executor maps each payments command message to the app.
type executor struct{ svc *app.Service }

func (h executor) execute(ctx context.Context, msg proto.Message) (string, command.Result, error) {
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
	return "", command.Result{}, commands.NotACommand(msg)
}

// Config configures the commands consumer; see consume.Config for the
// runtime's fields (Brokers, Pool, Logger, Registerer, Retry, KafkaOpts).
// Group defaults to Group, Topics to [payments.commands].
type Config = consume.Config

// NewConsumer returns the consumer of payments commands running h. The
// command topics and their dead-letter topics must exist.
func NewConsumer(cfg Config, h *Handler) (*consume.Consumer, error) {
	return commands.NewConsumer(cfg, h, Group, "payments.commands")
}
