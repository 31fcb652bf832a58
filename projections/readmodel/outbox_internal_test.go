package readmodel

import (
	"context"
	"testing"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	checkoutv1 "github.com/keel-commerce/keel/events/checkout/v1"
	"github.com/keel-commerce/keel/events/envelope"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	"google.golang.org/protobuf/proto"
)

// seen is a projection that counts what Apply is given.
type seen struct{ n int }

func (*seen) Name() string                               { return "seen" }
func (*seen) Sources() []string                          { return []string{"checkout"} }
func (*seen) Tables() []*TableDef                        { return nil }
func (s *seen) Apply(context.Context, Rows, Event) error { s.n++; return nil }

// The checkout saga's store holds its outbox of commands beside its
// events; a rebuild reads them, a live builder never does (the relay sends
// them to the commands topics). They are skipped and leave no applied
// stream, so both copies record the same streams.
func TestOutboxCommandsSkipped(t *testing.T) {
	ev := func(stream string, v int64, m proto.Message) Event {
		return Event{Event: envelope.Event{Type: string(m.ProtoReflect().Descriptor().FullName()), StreamID: stream, Version: v},
			Context: "checkout", Message: m}
	}
	p := &seen{}
	rows := Memory()
	err := ApplyAll(context.Background(), p, rows,
		ev("checkout-k", 1, &checkoutv1.CheckoutStarted{CheckoutId: "k"}),
		ev("outbox-k", 1, &ordersv1.PlaceOrder{CommandId: "k:place-order"}),
		ev("outbox-k", 2, &cartsv1.CloseCart{CommandId: "k:close-cart"}),
		ev("checkout-k", 2, &checkoutv1.CheckoutCompleted{CheckoutId: "k"}))
	if err != nil {
		t.Fatal(err)
	}
	if p.n != 2 {
		t.Errorf("Apply saw %d events, want the 2 checkout events", p.n)
	}
	if a, ok, err := appliedStreams.Get(context.Background(), rows, "checkout-k"); err != nil || !ok || a.Version != 2 {
		t.Errorf("checkout-k applied: %+v %v %v", a, ok, err)
	}
	if a, ok, err := appliedStreams.Get(context.Background(), rows, "outbox-k"); err != nil || ok {
		t.Errorf("outbox-k recorded: %+v %v %v", a, ok, err)
	}
}
