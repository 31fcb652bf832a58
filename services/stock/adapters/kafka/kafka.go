// Package kafka consumes the stock service's commands from Kafka
// (stock.commands, sent by the checkout saga) with the events/consume
// runtime: PostgreSQL checkpoints, retries with backoff, dead letters.
//
// A record's value is a protobuf command of keel.stock.v1 (ReceiveStock,
// AdjustStock, ReserveStock, ReleaseReservation, CommitReservation), its
// type named by the ce_type header (see events/wire); the key should be
// the SKU or the order id, so one aggregate's commands stay in order.
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

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consume"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/events/wire"
	"github.com/keel-commerce/keel/services/stock/app"
)

// Group is the consumer group of the stock commands consumer. Renaming it
// restarts consumption from the start of the topic (harmless, since
// commands are decided once, but slow).
const Group = "stock-commands"

// Outcome of one command record.
type Outcome string

// Outcomes reported to Config.OnOutcome.
const (
	Accepted Outcome = "accepted"
	Replayed Outcome = "replayed"
	Refused  Outcome = "refused"
)

// Handler turns stock command records into app commands. It is a
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
		return consume.Permanent(fmt.Errorf("stock command at %s/%d@%d: no %s header", rec.Topic, rec.Partition, rec.Offset, wire.HeaderType))
	}
	msg, err := h.reg.Decode(typ, rec.Value)
	if err != nil {
		return consume.Permanent(fmt.Errorf("stock command at %s/%d@%d: %w", rec.Topic, rec.Partition, rec.Offset, err))
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
		return consume.Permanent(fmt.Errorf("stock command %s (%s): %w", id, typ, err))
	case command.IsRejection(err), errors.Is(err, app.ErrUnknownOrder):
		// A refusal is an answer, not a failure: retrying cannot change it.
		h.log.InfoContext(ctx, "stock command refused", "command_id", id, "type", typ, "reason", err)
		h.report(id, Refused, err)
		return nil
	default:
		return fmt.Errorf("stock command %s (%s): %w", id, typ, err)
	}
}

func (h *Handler) report(id string, o Outcome, err error) {
	if h.OnOutcome != nil {
		h.OnOutcome(id, o, err)
	}
}

var errNotACommand = errors.New("not a stock command")

func (h *Handler) execute(ctx context.Context, msg any) (string, command.Result, error) {
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
	return "", command.Result{}, fmt.Errorf("%w: %T", errNotACommand, msg)
}

// Config configures the commands consumer; see consume.Config for the
// runtime's fields (Brokers, Pool, Logger, Registerer, Retry, KafkaOpts).
// Group defaults to Group, Topics to [stock.commands].
type Config = consume.Config

// NewConsumer returns the consumer of stock commands running h. The
// command topics and their dead-letter topics must exist.
func NewConsumer(cfg Config, h *Handler) (*consume.Consumer, error) {
	if cfg.Group == "" {
		cfg.Group = Group
	}
	if len(cfg.Topics) == 0 {
		cfg.Topics = []string{"stock.commands"}
	}
	return consume.New(cfg, h)
}
