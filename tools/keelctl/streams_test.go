package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/envelope"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/topics"
)

func TestStreamsShowAndTail(t *testing.T) {
	dbURL := freshDB(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg := codec.All()
	ev := func(m proto.Message) envelope.Event {
		typ, payload, err := reg.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		return envelope.Event{ID: ksuid.New(), Type: typ, Payload: payload, CorrelationID: "chk-1"}
	}
	now := timestamppb.New(time.Now())
	if _, err := st.Append(ctx, "stock-SKU1-wh-1", store.NoStream, []envelope.Event{
		ev(&stockv1.StockReceived{Sku: "SKU1", WarehouseId: "wh-1", Quantity: 10, ReceivedAt: now}),
		ev(&stockv1.StockReserved{ReservationId: "r-1", Sku: "SKU1", WarehouseId: "wh-1", Quantity: 3, OrderId: "o-1", ReservedAt: now}),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, "stock-SKU2-wh-1", store.NoStream, []envelope.Event{
		ev(&stockv1.StockReceived{Sku: "SKU2", WarehouseId: "wh-1", Quantity: 4, ReceivedAt: now}),
	}); err != nil {
		t.Fatal(err)
	}
	db := "--database-url=" + dbURL

	r := mustCode(t, exitOK, "streams", "show", "stock-SKU1-wh-1", "--json", db)
	evs := jsonLines(t, r.out)
	if len(evs) != 2 {
		t.Fatalf("streams show: %d events, want 2", len(evs))
	}
	p0, p1 := evs[0]["payload"].(map[string]any), evs[1]["payload"].(map[string]any)
	if evs[0]["type"] != "keel.stock.v1.StockReceived" || evs[0]["version"] != float64(1) || p0["sku"] != "SKU1" || p0["quantity"] != "10" ||
		evs[1]["type"] != "keel.stock.v1.StockReserved" || evs[1]["version"] != float64(2) || p1["reservation_id"] != "r-1" ||
		evs[0]["stream"] != "stock-SKU1-wh-1" || evs[0]["correlation_id"] != "chk-1" || evs[0]["id"] == "" || evs[0]["position"] == "" {
		t.Errorf("streams show: %v", evs)
	}
	r = mustCode(t, exitOK, "streams", "show", db, "stock-SKU1-wh-1")
	if !strings.Contains(r.out, "keel.stock.v1.StockReserved") || !strings.Contains(r.out, `"reservation_id":"r-1"`) {
		t.Errorf("streams show table:\n%s", r.out)
	}
	mustCode(t, exitNotFound, "streams", "show", db, "stock-nope")
	mustCode(t, exitUsage, "streams", "show", "stock-SKU1-wh-1") // no --context

	r = mustCode(t, exitOK, "streams", "tail", db, "--json")
	all := jsonLines(t, r.out)
	if len(all) != 3 || all[2]["stream"] != "stock-SKU2-wh-1" {
		t.Fatalf("streams tail: %v", all)
	}
	r = mustCode(t, exitOK, "streams", "tail", db, "--json", "--from", all[0]["position"].(string))
	if got := jsonLines(t, r.out); len(got) != 2 || got[0]["id"] != all[1]["id"] {
		t.Errorf("streams tail --from: %v", got)
	}
	mustCode(t, exitUsage, "streams", "tail", db, "--from", "yesterday")

	// --follow delivers what is appended while it runs.
	done := make(chan result, 1)
	go func() { done <- keelctl(t, "streams", "tail", db, "--follow", "--limit", "4", "--json") }()
	time.Sleep(500 * time.Millisecond)
	if _, err := st.Append(ctx, "stock-SKU3-wh-1", store.NoStream, []envelope.Event{
		ev(&stockv1.StockReceived{Sku: "SKU3", WarehouseId: "wh-1", Quantity: 1, ReceivedAt: now}),
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		got := jsonLines(t, r.out)
		if r.code != 0 || len(got) != 4 || got[3]["stream"] != "stock-SKU3-wh-1" {
			t.Errorf("tail --follow: exit %d, %v", r.code, got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("tail --follow did not deliver the new event")
	}
}

func TestTopicsEnsureAndDescribe(t *testing.T) {
	c := uniq("kt")
	want := []string{topics.Events(c), topics.DLQ(topics.Events(c)), topics.Commands(c), topics.DLQ(topics.Commands(c))}
	deleteTopicsAtEnd(t, want...)

	r := mustCode(t, exitOK, "topics", "ensure", "--contexts", c, "--partitions", "3", "--json")
	got := jsonLines(t, r.out)
	if len(got) != 4 {
		t.Fatalf("ensure: %v", got)
	}
	for i, x := range got {
		if x["topic"] != want[i] || x["status"] != "created" || x["partitions"] != float64(3) || x["replication"] != float64(1) {
			t.Errorf("ensure: %v", x)
		}
	}
	r = mustCode(t, exitOK, "topics", "ensure", "--contexts", c, "--partitions", "3")
	if strings.Count(r.out, "exists") != 4 {
		t.Errorf("second ensure:\n%s", r.out)
	}
	mustCode(t, exitFailed, "topics", "ensure", "--contexts", c, "--partitions", "6") // fewer partitions than asked
	mustCode(t, exitUsage, "topics", "ensure", "--partitions", "0")

	r = mustCode(t, exitOK, "topics", "describe", "--json", want[0], want[1])
	d := jsonLines(t, r.out)
	if len(d) != 2 {
		t.Fatalf("describe: %v", d)
	}
	for _, x := range d {
		cfg := x["configs"].(map[string]any)
		wantRet := "1209600000" // 14 days
		if strings.HasSuffix(x["topic"].(string), ".dlq") {
			wantRet = "7776000000" // 90 days
		}
		if cfg["retention.ms"] != wantRet || x["partitions"] != float64(3) {
			t.Errorf("describe: %v", x)
		}
	}
	r = mustCode(t, exitOK, "topics", "describe")
	if !strings.Contains(r.out, want[0]) || !strings.Contains(r.out, "90d") {
		t.Errorf("describe table:\n%s", r.out)
	}
	mustCode(t, exitNotFound, "topics", "describe", c+".nope")
}

func TestUsage(t *testing.T) {
	mustCode(t, exitUsage)
	mustCode(t, exitUsage, "streams")
	mustCode(t, exitUsage, "frobnicate", "now")
	mustCode(t, exitUsage, "dlq", "list")
	mustCode(t, exitUsage, "dlq", "list", "a.dlq", "--bogus")
	if r := mustCode(t, exitOK, "--help"); !strings.Contains(r.out, "dlq redrive") {
		t.Errorf("help:\n%s", r.out)
	}
}
