package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/consume"
	"github.com/keel-commerce/keel/events/envelope"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/events/testenv"
	"github.com/keel-commerce/keel/events/wire"
)

// stockEvent is a real stock event record, as the relay publishes it.
func stockEvent(t *testing.T, topic, sku string, version int64) *kgo.Record {
	t.Helper()
	typ, payload, err := codec.All().Encode(&stockv1.StockReceived{
		Sku: sku, WarehouseId: "wh-1", Quantity: 7, Reference: "po-1", ReceivedAt: timestamppb.Now(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return wire.Record(topic, "keel/stock", envelope.Event{
		ID: ksuid.New(), Type: typ, StreamID: "stock-" + sku + "-wh-1", Version: version,
		Position: envelope.Position{Tx: 100, Global: version}, RecordedAt: time.Now(),
		CorrelationID: "corr-" + sku, Payload: payload,
		Metadata: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
	})
}

// startPoisonConsumer runs a real events/consume consumer on topic whose
// handler refuses every event of a SKU starting with "POISON": the runtime
// dead-letters those records with its own headers.
func startPoisonConsumer(t *testing.T, topic string) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), freshDB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	reg := codec.All()
	h := consume.HandlerFunc(func(ctx context.Context, tx pgx.Tx, rec *kgo.Record) error {
		ev, err := consume.DecodeEvent(rec)
		if err != nil {
			return err
		}
		msg, err := reg.Decode(ev.Type, ev.Payload)
		if err != nil {
			return consume.Permanent(err)
		}
		if r, ok := msg.(*stockv1.StockReceived); ok && strings.HasPrefix(r.Sku, "POISON") {
			return errors.New("poison: unknown warehouse for " + r.Sku)
		}
		return nil
	})
	c, err := consume.New(consume.Config{
		Brokers: testBrokers(),
		Group:   uniq("keelctl-test-"),
		Topics:  []string{topic},
		Retry:   consume.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
		Pool:    pool,
		KafkaOpts: []kgo.Opt{
			kgo.HeartbeatInterval(300 * time.Millisecond),
			kgo.SessionTimeout(6 * time.Second),
			kgo.FetchMaxWait(200 * time.Millisecond),
		},
	}, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	})
}

func headerMap(hs []kgo.RecordHeader) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Key+"="+string(h.Value))
	}
	return out
}

// readAt reads the record at topic/partition@offset.
func readAt(t *testing.T, topic string, partition int32, offset int64) *kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(testBrokers()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().At(offset)}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("no record at %s/%d@%d", topic, partition, offset)
		}
		var got *kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset == offset {
				got = r
			}
		})
		if got != nil {
			return got
		}
	}
}

func TestDLQEndToEnd(t *testing.T) {
	origin := uniq("keelctl-test-")
	dlq := origin + ".dlq"
	freshTopics(t, 2, origin)
	freshTopics(t, 1, dlq)
	state := "--state-database-url=" + freshDB(t)
	adm := testenv.Admin(t)

	// Two poison events among good ones, through a real consumer.
	prod, err := kgo.NewClient(kgo.SeedBrokers(testBrokers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	sent := []*kgo.Record{
		stockEvent(t, origin, "GOOD-1", 1),
		stockEvent(t, origin, "POISON-1", 1),
		stockEvent(t, origin, "GOOD-2", 1),
		stockEvent(t, origin, "POISON-2", 1),
	}
	originals := map[string][]string{} // ce_id → headers as sent
	for _, r := range sent {
		originals[header(r, wire.HeaderID)] = headerMap(r.Headers)
	}
	if err := prod.ProduceSync(context.Background(), sent...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	startPoisonConsumer(t, origin)
	waitEnd(t, adm, dlq, 2)

	// list
	r := mustCode(t, exitOK, "dlq", "list", dlq, "--json", state)
	letters := jsonLines(t, r.out)
	if len(letters) != 2 {
		t.Fatalf("dlq list: %d dead letters, want 2", len(letters))
	}
	bySKU := map[string]map[string]any{}
	for i, l := range letters {
		if l["origin_topic"] != origin || l["ce_type"] != "keel.stock.v1.StockReceived" || l["state"] != "pending" ||
			l["attempts"] != "2" || !strings.Contains(l["error"].(string), "poison") || l["time"] == "" ||
			l["offset"] != float64(i) || l["partition"] != float64(0) {
			t.Errorf("dead letter %d: %v", i, l)
		}
		if _, ok := originals[l["ce_id"].(string)]; !ok {
			t.Errorf("dead letter %d: ce_id %v was not sent", i, l["ce_id"])
		}
		bySKU[strings.TrimSuffix(strings.TrimPrefix(l["key"].(string), "stock-"), "-wh-1")] = l
	}
	if bySKU["POISON-1"] == nil || bySKU["POISON-2"] == nil {
		t.Fatalf("dead letters are not the poison events: %v", letters)
	}
	r = mustCode(t, exitOK, "dlq", "list", dlq, state)
	if !strings.Contains(r.out, "pending") || !strings.Contains(r.out, origin+"/") || !strings.Contains(r.out, "2 dead letter(s)") {
		t.Errorf("dlq list table:\n%s", r.out)
	}

	// show
	r = mustCode(t, exitOK, "dlq", "show", dlq, "0", "--json", state)
	shown := jsonLines(t, r.out)[0]
	hs := shown["headers"].(map[string]any)
	if hs[consume.HeaderDLQOriginTopic] != origin || hs[wire.HeaderID] != letters[0]["ce_id"] || hs["traceparent"] == nil {
		t.Errorf("dlq show headers: %v", hs)
	}
	payload, _ := shown["payload"].(map[string]any)
	if payload["sku"] == nil || !strings.HasPrefix(payload["sku"].(string), "POISON") || payload["quantity"] != "7" {
		t.Errorf("dlq show payload: %v", shown)
	}
	r = mustCode(t, exitOK, "dlq", "show", dlq, "0:1", state)
	if !strings.Contains(r.out, "dlq-error") || !strings.Contains(r.out, `"sku": "`) {
		t.Errorf("dlq show table:\n%s", r.out)
	}

	// clear errors
	mustCode(t, exitUsage, "dlq", "show", dlq, "abc", state)
	mustCode(t, exitNotFound, "dlq", "show", dlq, "99", state)
	mustCode(t, exitNotFound, "dlq", "show", dlq, "5:0", state)
	mustCode(t, exitNotFound, "dlq", "list", origin+".nope.dlq", state)
	mustCode(t, exitUsage, "dlq", "redrive", dlq, state)
	mustCode(t, exitUsage, "dlq", "redrive", dlq, "--all", "--offset", "0", state)
	mustCode(t, exitUsage, "dlq", "show", origin, "1", state) // origin has 2 partitions: P:O needed

	// dry run changes nothing
	before := endOffset(t, adm, origin)
	r = mustCode(t, exitOK, "dlq", "redrive", dlq, "--offset", "0", "--dry-run", state)
	if !strings.Contains(r.out, "would redrive") {
		t.Errorf("dry run:\n%s", r.out)
	}
	if endOffset(t, adm, origin) != before {
		t.Fatal("dry run produced")
	}

	// redrive lands in the origin topic with the original record
	r = mustCode(t, exitOK, "dlq", "redrive", dlq, "--offset", "0", "--json", state)
	res := jsonLines(t, r.out)[0]
	if res["result"] != "redriven" || res["origin_topic"] != origin {
		t.Fatalf("redrive: %v", res)
	}
	got := readAt(t, origin, int32(res["target_partition"].(float64)), int64(res["target_offset"].(float64)))
	ceID := letters[0]["ce_id"].(string)
	if diff := cmp.Diff(originals[ceID], headerMap(got.Headers)); diff != "" {
		t.Errorf("redriven headers differ from the original's (-want +got):\n%s", diff)
	}
	var orig *kgo.Record
	for _, s := range sent {
		if header(s, wire.HeaderID) == ceID {
			orig = s
		}
	}
	if string(got.Key) != string(orig.Key) || string(got.Value) != string(orig.Value) {
		t.Errorf("redriven key/value differ: %q vs %q", got.Key, orig.Key)
	}

	// a second redrive of the same offset is refused; --force overrides
	r = mustCode(t, exitRefused, "dlq", "redrive", dlq, "--offset", "0", state)
	if !strings.Contains(r.errOut, "already redriven") {
		t.Errorf("second redrive: %s", r.errOut)
	}
	// The poison event fails again: a new dead letter of the same ce_id,
	// which a redrive refuses too (deduped by ce_id).
	waitEnd(t, adm, dlq, 3)
	r = mustCode(t, exitRefused, "dlq", "redrive", dlq, "--offset", "2", state)
	if !strings.Contains(r.errOut, fmt.Sprintf("event %s was already redriven from 0:0", ceID)) {
		t.Errorf("redrive of a second dead letter of one event: %s", r.errOut)
	}
	mustCode(t, exitOK, "dlq", "redrive", dlq, "--offset", "0", "--force", state)

	// discard
	mustCode(t, exitUsage, "dlq", "discard", dlq, "--offset", "1", state)
	mustCode(t, exitOK, "dlq", "discard", dlq, "--offset", "1", "--reason", "SKU retired", state)
	mustCode(t, exitRefused, "dlq", "discard", dlq, "--offset", "1", "--reason", "again", state)
	r = mustCode(t, exitOK, "dlq", "list", dlq, "--json", state)
	states := map[float64]string{}
	for _, l := range jsonLines(t, r.out) {
		states[l["offset"].(float64)] = l["state"].(string)
	}
	if states[0] != "redriven" || states[1] != "discarded" || states[2] != "pending" {
		t.Errorf("states after redrive and discard: %v", states)
	}

	// --all redrives nothing already handled, nor a second copy of a redriven event
	before = endOffset(t, adm, origin)
	r = mustCode(t, exitOK, "dlq", "redrive", dlq, "--all", "--json", state)
	for _, x := range jsonLines(t, r.out) {
		if x["result"] != "skipped" {
			t.Errorf("redrive --all: %v", x)
		}
	}
	if endOffset(t, adm, origin) != before {
		t.Error("redrive --all produced a handled dead letter")
	}
}
