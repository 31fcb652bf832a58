// Package python holds the test of the Python example consumer
// (consume.py): real Keel event records go to a fresh topic, the script
// reads them with a descriptor set built from schemas/ and must decode
// every one.
package python

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/envelope"
	ordersv1 "github.com/keel-commerce/keel/events/orders/v1"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/events/testenv"
	typesv1 "github.com/keel-commerce/keel/events/types/v1"
	"github.com/keel-commerce/keel/events/wire"
	"github.com/keel-commerce/keel/tools/internal/pyvenv"
)

func brokers() []string { return testenv.KafkaBrokers() }

func runCmd(t *testing.T, dir string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// descriptorSet builds schemas/ into a FileDescriptorSet with the pinned
// buf (installed into ./bin by make check, or here when missing).
func descriptorSet(t *testing.T, root string) string {
	t.Helper()
	buf := filepath.Join(root, "bin", "buf")
	if _, err := os.Stat(buf); err != nil {
		runCmd(t, root, "bash", "-c", "source tools/check/lib.sh && ensure_tools")
	}
	out := filepath.Join(t.TempDir(), "keel.binpb")
	runCmd(t, root, buf, "build", "schemas", "-o", out)
	return out
}

func TestPythonConsumerDecodesEveryEvent(t *testing.T) {
	root := testenv.Root(t)
	py := pyvenv.Python(t, root, "python-venv", "requirements.txt")
	descriptors := descriptorSet(t, root)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// testenv deletes it at the end with a client of its own: this test's
	// client is closed by then (a cleanup through it left every run's topic
	// behind).
	topic := "python-example-" + strings.ToLower(ksuid.New().String()[:12])
	testenv.CreateTopics(t, 3, topic)

	// Real events: a few with content, and one of every registered type.
	reg := codec.All()
	now := timestamppb.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	msgs := []proto.Message{
		&stockv1.StockReceived{Sku: "SKU-1", WarehouseId: "wh-1", Quantity: 12, Reference: "po-7", ReceivedAt: now},
		&stockv1.StockReserved{ReservationId: "res-1", Sku: "SKU-1", WarehouseId: "wh-1", Quantity: 2, OrderId: "ord-1", ReservedAt: now},
		&ordersv1.OrderPlaced{OrderId: "ord-1", CheckoutId: "chk-1", CartId: "cart-1", PlacedAt: now,
			Totals: &typesv1.Totals{Total: &typesv1.Money{AmountMinor: 2599, Currency: "EUR"}}},
	}
	for _, typ := range reg.Types() {
		m, err := reg.New(typ)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	type sent struct {
		typ    string
		stream string
	}
	want := map[string]sent{} // ce_id → what was sent
	var recs []*kgo.Record
	for i, m := range msgs {
		typ, payload, err := reg.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		ev := envelope.Event{ID: ksuid.New(), Type: typ, StreamID: "stream-" + string(rune('a'+i%26)),
			Version: int64(i + 1), Position: envelope.Position{Tx: 9, Global: int64(i + 1)}, RecordedAt: time.Now(),
			CorrelationID: "corr-1", Payload: payload}
		recs = append(recs, wire.Record(topic, "keel/test", ev))
		want[ev.ID.String()] = sent{typ, ev.StreamID}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(ctx, py, "consume.py", "--brokers", strings.Join(brokers(), ","), "--topic", topic,
		"--group", topic, "--descriptors", descriptors, "--max-events", strconv.Itoa(len(recs)), "--idle-timeout", "30")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("consume.py: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}

	got := 0
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var out struct {
			Topic   string            `json:"topic"`
			Key     string            `json:"key"`
			Headers map[string]string `json:"headers"`
			Type    string            `json:"type"`
			Event   map[string]any    `json:"event"`
			Error   string            `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &out); err != nil {
			t.Fatalf("consume.py printed a line that is not JSON: %q", sc.Text())
		}
		got++
		id := out.Headers[wire.HeaderID]
		s, ok := want[id]
		if !ok {
			t.Errorf("unexpected event %s", sc.Text())
			continue
		}
		delete(want, id)
		if out.Error != "" || out.Event == nil || out.Type != s.typ || out.Key != s.stream ||
			out.Headers[wire.HeaderSpecVersion] != "1.0" || out.Headers[wire.HeaderSubject] != s.stream ||
			out.Headers[wire.HeaderCorrelationID] != "corr-1" || out.Topic != topic {
			t.Errorf("event %s (%s) not decoded as sent: %s", id, s.typ, sc.Text())
		}
		switch s.typ {
		case "keel.stock.v1.StockReceived":
			if out.Event["sku"] == "SKU-1" && (out.Event["quantity"] != "12" || out.Event["received_at"] != "2026-03-01T12:00:00Z") {
				t.Errorf("StockReceived fields: %v", out.Event)
			}
		case "keel.orders.v1.OrderPlaced":
			if out.Event["order_id"] == "ord-1" {
				total, _ := out.Event["totals"].(map[string]any)["total"].(map[string]any)
				if total["amount_minor"] != "2599" || total["currency"] != "EUR" {
					t.Errorf("OrderPlaced nested money: %v", out.Event)
				}
			}
		}
	}
	if got != len(recs) || len(want) != 0 {
		t.Errorf("consume.py printed %d events of %d; missing %v\nstderr:\n%s", got, len(recs), want, stderr.String())
	}
}
