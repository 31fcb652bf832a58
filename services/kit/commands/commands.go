// Package commands is the Kafka side of a service's command API, the same
// in every service: a consume.Handler that decodes a command record (its
// protobuf type named by the ce_type header, see events/wire), runs it
// through the service's application layer, and sorts the outcome:
//
//   - accepted (or replayed: the id was decided before): done;
//   - refused by the domain: an answer, not a failure; logged, reported,
//     never retried (the refusal is stored under the command id);
//   - refused because its command id was first used for another command
//     (command.IDReused: other type, target or input): neither applied
//     nor dead-lettered, the id keeps its first outcome; logged as a
//     warning naming both commands and the record, reported as refused
//     with that error, and counted by the command handler
//     (keel_commands_total{outcome="reused"}): the sender has a bug to fix;
//   - undecodable, of an unknown type, or invalid: consume.Permanent, so
//     the record is dead-lettered at once;
//   - anything else (database down): returned, so the runtime retries.
//
// The command runs in its own transaction, not the consumer's batch
// transaction: the application layer decides each command id once, so a
// redelivered record is answered from the stored outcome.
package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consume"
	"github.com/keel-commerce/keel/events/wire"
	"github.com/keel-commerce/keel/services/kit/httpapi"
)

// Outcome of one command record.
type Outcome string

// Outcomes reported to Handler.OnOutcome.
const (
	Accepted Outcome = "accepted"
	Replayed Outcome = "replayed"
	Refused  Outcome = "refused"
)

// ErrNotACommand is what an Execute returns for a message it does not
// take: the record is dead-lettered.
var ErrNotACommand = errors.New("not a command of this service")

// Handler runs one service's command records. It is a consume.Handler and
// safe for concurrent use.
type Handler struct {
	// Context names the service in errors and logs ("orders").
	Context  string
	Registry *codec.Registry
	// Execute runs one decoded command and returns its id; it returns
	// ErrNotACommand (wrapped) for a type it does not take.
	Execute func(ctx context.Context, msg proto.Message) (commandID string, res command.Result, err error)
	// Invalid reports an error that makes the command poison besides
	// command.ErrInvalidCommand and ErrNotACommand (the app's own).
	Invalid func(error) bool
	// Refusal reports an error that is the domain's answer besides a
	// command.Rejection (an unknown aggregate, say).
	Refusal func(error) bool
	Log     *slog.Logger
	// OnOutcome, when set, is called after each decided command (tests,
	// metrics); it must not block.
	OnOutcome func(commandID string, o Outcome, err error)
}

// Handle decodes and executes one command record. tx is the consumer's
// batch transaction; the command does not use it (see the package comment).
func (h *Handler) Handle(ctx context.Context, _ pgx.Tx, rec *kgo.Record) error {
	var typ string
	for _, hd := range rec.Headers {
		if hd.Key == wire.HeaderType {
			typ = string(hd.Value)
		}
	}
	if typ == "" {
		return consume.Permanent(fmt.Errorf("%s command at %s/%d@%d: no %s header", h.Context, rec.Topic, rec.Partition, rec.Offset, wire.HeaderType))
	}
	msg, err := h.Registry.Decode(typ, rec.Value)
	if err != nil {
		return consume.Permanent(fmt.Errorf("%s command at %s/%d@%d: %w", h.Context, rec.Topic, rec.Partition, rec.Offset, err))
	}
	if f := textFault(msg.ProtoReflect(), ""); f != "" {
		// The HTTP edge's string rule: what a consumer downstream cannot
		// store must not become an event.
		return consume.Permanent(fmt.Errorf("%s command at %s/%d@%d (%s): %s", h.Context, rec.Topic, rec.Partition, rec.Offset, typ, f))
	}
	id, res, err := h.Execute(ctx, msg)
	switch {
	case err == nil:
		o := Accepted
		if res.Replayed {
			o = Replayed
		}
		h.report(id, o, nil)
		return nil
	case errors.Is(err, ErrNotACommand), errors.Is(err, command.ErrInvalidCommand), h.Invalid != nil && h.Invalid(err):
		return consume.Permanent(fmt.Errorf("%s command %s (%s): %w", h.Context, id, typ, err))
	case errors.Is(err, command.ErrIDReused):
		if h.Log != nil {
			h.Log.WarnContext(ctx, h.Context+" command refused: its command id names another command", "command_id", id,
				"type", typ, "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "key", string(rec.Key), "reason", err)
		}
		h.report(id, Refused, err)
		return nil
	case command.IsRejection(err), h.Refusal != nil && h.Refusal(err):
		// A refusal is an answer, not a failure: retrying cannot change it.
		if h.Log != nil {
			h.Log.InfoContext(ctx, h.Context+" command refused", "command_id", id, "type", typ, "reason", err)
		}
		h.report(id, Refused, err)
		return nil
	default:
		return fmt.Errorf("%s command %s (%s): %w", h.Context, id, typ, err)
	}
}

func (h *Handler) report(id string, o Outcome, err error) {
	if h.OnOutcome != nil {
		h.OnOutcome(id, o, err)
	}
}

// NotACommand is the error for msg, a message Execute does not take.
func NotACommand(msg proto.Message) error { return fmt.Errorf("%w: %T", ErrNotACommand, msg) }

// NewConsumer returns the consumer running h, with group and topic as
// defaults for cfg's empty Group and Topics. The topics and their
// dead-letter topics must exist.
func NewConsumer(cfg consume.Config, h *Handler, group, topic string) (*consume.Consumer, error) {
	if cfg.Group == "" {
		cfg.Group = group
	}
	if len(cfg.Topics) == 0 {
		cfg.Topics = []string{topic}
	}
	return consume.New(cfg, h)
}

// textFault applies httpapi's free-text rule to every string in m, at any
// depth (map keys included), and names the first field that breaks it.
func textFault(m protoreflect.Message, path string) string {
	var fault string
	check := func(name string, v protoreflect.Value, kind protoreflect.Kind) {
		switch kind {
		case protoreflect.StringKind:
			if f := httpapi.TextFault(v.String()); f != "" {
				fault = name + " " + f
			}
		case protoreflect.MessageKind, protoreflect.GroupKind:
			fault = textFault(v.Message(), name+".")
		}
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := path + string(fd.Name())
		switch {
		case fd.IsList():
			for i, l := 0, v.List(); i < l.Len() && fault == ""; i++ {
				check(fmt.Sprintf("%s.%d", name, i), l.Get(i), fd.Kind())
			}
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				check(name+" key", k.Value(), fd.MapKey().Kind())
				if fault == "" {
					check(name+"."+k.String(), mv, fd.MapValue().Kind())
				}
				return fault == ""
			})
		default:
			check(name, v, fd.Kind())
		}
		return fault == ""
	})
	return fault
}
