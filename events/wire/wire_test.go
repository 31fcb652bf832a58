package wire

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/envelope"
)

func TestRoundTrip(t *testing.T) {
	ev := envelope.Event{
		ID:            ksuid.New(),
		Type:          "keel.stock.v1.StockReceived",
		StreamID:      "stock-SKU1-WH1",
		Version:       7,
		Position:      envelope.Position{Tx: 991, Global: 42},
		RecordedAt:    time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC),
		CorrelationID: "corr",
		CausationID:   "cause",
		Payload:       []byte{1, 2, 3},
		Metadata:      map[string]string{envelope.MetaTraceparent: "00-abc-def-01", "tenant": "eu"},
	}
	r := Record("stock.events", "keel/stock", ev)
	if string(r.Key) != ev.StreamID || r.Topic != "stock.events" {
		t.Fatalf("key/topic = %q/%q", r.Key, r.Topic)
	}
	got, err := Event(r)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(ev, got); d != "" {
		t.Fatalf("round trip (-want +got):\n%s", d)
	}
}

func TestMalformed(t *testing.T) {
	for name, hs := range map[string][]kgo.RecordHeader{
		"no headers": nil,
		"bad id":     {{Key: HeaderID, Value: []byte("x")}, {Key: HeaderType, Value: []byte("t")}, {Key: HeaderStreamVersion, Value: []byte("1")}},
		"bad version": {{Key: HeaderID, Value: []byte(ksuid.New().String())}, {Key: HeaderType, Value: []byte("t")},
			{Key: HeaderStreamVersion, Value: []byte("one")}},
	} {
		if _, err := Event(&kgo.Record{Headers: hs}); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}
