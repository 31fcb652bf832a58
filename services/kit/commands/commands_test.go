package commands

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/command"
	"github.com/keel-commerce/keel/events/consume"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"github.com/keel-commerce/keel/events/wire"
)

var errInvalid, errUnknown, errDown = errors.New("invalid"), errors.New("unknown order"), errors.New("database down")

// TestOutcomes: each kind of result of Execute becomes the outcome the
// package comment promises.
func TestOutcomes(t *testing.T) {
	reg := codec.All()
	typ, payload, err := reg.Encode(&ordersv1.ConfirmOrder{CommandId: "c1", OrderId: "o1"})
	if err != nil {
		t.Fatal(err)
	}
	reused := &command.IDReused{ID: "c1", Kind: "CancelOrder", Target: "o2"}
	rec := &kgo.Record{Value: payload, Headers: []kgo.RecordHeader{{Key: wire.HeaderType, Value: []byte(typ)}}}
	// The HTTP edge's string rule holds on the command topics too: a NUL
	// deep in a command (issue 9, defect 2) is poison, never an event.
	nul := func(m proto.Message) *kgo.Record {
		typ, payload, err := reg.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		return &kgo.Record{Value: payload, Headers: []kgo.RecordHeader{{Key: wire.HeaderType, Value: []byte(typ)}}}
	}
	for _, c := range []struct {
		name      string
		rec       *kgo.Record
		res       command.Result
		execErr   error
		permanent bool
		fails     bool
		outcome   Outcome
	}{
		{name: "accepted", rec: rec, outcome: Accepted},
		{name: "replayed", rec: rec, res: command.Result{Replayed: true}, outcome: Replayed},
		{name: "rejected", rec: rec, execErr: &command.Rejection{Code: "x"}, outcome: Refused},
		{name: "command id reused", rec: rec, execErr: fmt.Errorf("wrapped: %w", reused), outcome: Refused},
		{name: "service refusal", rec: rec, execErr: errUnknown, outcome: Refused},
		{name: "invalid", rec: rec, execErr: errInvalid, fails: true, permanent: true},
		{name: "not a command", rec: rec, execErr: NotACommand(&ordersv1.OrderPlaced{}), fails: true, permanent: true},
		{name: "infrastructure", rec: rec, execErr: errDown, fails: true},
		{name: "no type header", rec: &kgo.Record{Value: payload}, fails: true, permanent: true},
		{name: "undecodable", rec: &kgo.Record{Value: []byte{0xff}, Headers: rec.Headers}, fails: true, permanent: true},
		{name: "NUL in a field", rec: nul(&ordersv1.ConfirmOrder{CommandId: "c\x001", OrderId: "o1"}), fails: true, permanent: true},
		{name: "control character nested", fails: true, permanent: true, rec: nul(&ordersv1.PlaceOrder{CommandId: "c1", CheckoutId: "co1",
			Lines: []*ordersv1.OrderLine{{Sku: "A", Name: "ok"}, {Sku: "B", Name: "tab\there"}}})},
		{name: "non-ASCII text is fine", rec: nul(&ordersv1.PlaceOrder{CommandId: "c1", CheckoutId: "co1",
			Lines: []*ordersv1.OrderLine{{Sku: "A", Name: "Grüße 😀"}}}), outcome: Accepted},
	} {
		var got Outcome
		var logged bytes.Buffer
		h := &Handler{Context: "orders", Registry: reg, Log: slog.New(slog.NewTextHandler(&logged, nil)),
			Execute:   func(context.Context, proto.Message) (string, command.Result, error) { return "c1", c.res, c.execErr },
			Invalid:   func(err error) bool { return errors.Is(err, errInvalid) },
			Refusal:   func(err error) bool { return errors.Is(err, errUnknown) },
			OnOutcome: func(_ string, o Outcome, _ error) { got = o }}
		err := h.Handle(context.Background(), nil, c.rec)
		if (err != nil) != c.fails || consume.IsPermanent(err) != c.permanent || got != c.outcome {
			t.Errorf("%s: err %v (permanent %v), outcome %q; want fails %v permanent %v outcome %q",
				c.name, err, consume.IsPermanent(err), got, c.fails, c.permanent, c.outcome)
		}
		// The sender of a reused id must be able to see why it was refused.
		if c.name == "command id reused" && (!strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), "CancelOrder on o2")) {
			t.Errorf("%s: logged %q, want a warning naming the first command", c.name, logged.String())
		}
	}
}

// TestTextFaultNamesTheField: the dead letter's error says which field
// broke the string rule, at any depth.
func TestTextFaultNamesTheField(t *testing.T) {
	m := &ordersv1.PlaceOrder{CommandId: "c1", Lines: []*ordersv1.OrderLine{{Sku: "A"}, {Sku: "B", Name: "tab\there"}}}
	if got, want := textFault(m.ProtoReflect(), ""), "lines.1.name must not contain control characters (U+0009 at character 4)"; got != want {
		t.Errorf("textFault = %q, want %q", got, want)
	}
}
