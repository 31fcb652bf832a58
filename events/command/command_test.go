package command_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/ksuid"
	"google.golang.org/protobuf/proto"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/command"
	stockv1 "github.com/keel-commerce/keel/events/stock/v1"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/testenv"
)

// stock is a toy aggregate: units on hand minus units reserved.
type stock struct{ free int64 }

var toy = command.Aggregate[*stock]{
	New: func(string) *stock { return &stock{} },
	Apply: func(s *stock, ev proto.Message) *stock {
		switch e := ev.(type) {
		case *stockv1.StockReceived:
			s.free += e.Quantity
		case *stockv1.StockReserved:
			s.free -= e.Quantity
		}
		return s
	},
}

var errNoStock = errors.New("not enough stock")

func reserve(stream string, qty int64) command.Command[*stock] {
	return command.Command[*stock]{
		ID:          ksuid.New().String(),
		Streams:     []string{stream},
		Fingerprint: command.Fingerprint{Kind: "reserve", Input: qty},
		Decide: func(states map[string]*stock) (command.Decision, error) {
			if states[stream].free < qty {
				return command.Decision{}, command.Reject("out_of_stock", errNoStock)
			}
			return command.Decision{
				Events:   map[string][]proto.Message{stream: {&stockv1.StockReserved{Sku: stream, Quantity: qty}}},
				Response: []byte(fmt.Sprintf("reserved %d", qty)),
			}, nil
		},
	}
}

func receive(stream string, qty int64) command.Command[*stock] {
	return command.Command[*stock]{
		ID:          ksuid.New().String(),
		Streams:     []string{stream},
		Fingerprint: command.Fingerprint{Kind: "receive", Input: qty},
		Decide: func(map[string]*stock) (command.Decision, error) {
			return command.Decision{Events: map[string][]proto.Message{stream: {&stockv1.StockReceived{Sku: stream, Quantity: qty}}}}, nil
		},
	}
}

func setup(t *testing.T) (*pg.Store, func() *command.Handler[*stock]) {
	t.Helper()
	st, err := pg.New(context.Background(), testenv.Pool(t), pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st, func() *command.Handler[*stock] {
		h, err := command.New(context.Background(), st, codec.All(), toy, command.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
}

func count(t *testing.T, st *pg.Store, stream string) int {
	t.Helper()
	evs, err := st.ReadStream(context.Background(), stream, 1, 100000)
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

func TestSameIDDecidedOnce(t *testing.T) {
	st, newHandler := setup(t)
	h := newHandler()
	ctx := context.Background()
	if _, err := h.Execute(ctx, receive("sku-1", 1)); err != nil {
		t.Fatal(err)
	}
	cmd := reserve("sku-1", 1)
	first, err := h.Execute(ctx, cmd)
	if err != nil || first.Replayed || string(first.Response) != "reserved 1" || first.Position.IsZero() {
		t.Fatalf("first = %+v, %v", first, err)
	}
	// Again, from another replica with a cold cache: same answer, nothing new.
	again, err := newHandler().Execute(ctx, cmd)
	if err != nil || !again.Replayed || string(again.Response) != "reserved 1" || again.Position != first.Position {
		t.Fatalf("again = %+v, %v; want replay of %+v", again, err, first)
	}
	if n := count(t, st, "sku-1"); n != 2 {
		t.Fatalf("stream has %d events, want 2", n)
	}
	// Both answers carry the stream's version after the command: what a
	// read-your-writes token waits for.
	if first.Streams["sku-1"] != 2 || again.Streams["sku-1"] != 2 {
		t.Fatalf("stream versions: first %v, again %v; want sku-1 at 2", first.Streams, again.Streams)
	}
	// A refusal is stored too: once stock arrives, the same id stays refused.
	refused := reserve("sku-1", 5)
	_, err = h.Execute(ctx, refused)
	var rej *command.Rejection
	if !errors.As(err, &rej) || rej.Code != "out_of_stock" || !errors.Is(err, errNoStock) {
		t.Fatalf("err = %v, want out_of_stock rejection wrapping errNoStock", err)
	}
	if _, err := h.Execute(ctx, receive("sku-1", 10)); err != nil {
		t.Fatal(err)
	}
	res, err := h.Execute(ctx, refused)
	if !command.IsRejection(err) || !res.Replayed {
		t.Fatalf("retry of a refused command = %+v, %v; want the stored refusal", res, err)
	}
}

// TestHotStreamRace: 500 concurrent one-unit reservations against 10
// units, from two handlers (two replicas): exactly 10 win.
func TestHotStreamRace(t *testing.T) {
	st, newHandler := setup(t)
	a, b := newHandler(), newHandler()
	ctx := context.Background()
	if _, err := a.Execute(ctx, receive("hot", 10)); err != nil {
		t.Fatal(err)
	}
	var won, refused atomic.Int32
	var wg sync.WaitGroup
	errc := make(chan error, 500)
	for i := range 500 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := a
			if i%2 == 1 {
				h = b
			}
			_, err := h.Execute(ctx, reserve("hot", 1))
			switch {
			case err == nil:
				won.Add(1)
			case command.IsRejection(err):
				refused.Add(1)
			default:
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if won.Load() != 10 || refused.Load() != 490 {
		t.Fatalf("%d won, %d refused; want 10 and 490", won.Load(), refused.Load())
	}
	if n := count(t, st, "hot"); n != 11 {
		t.Fatalf("stream has %d events, want 11", n)
	}
}

func TestMultiStreamIsAtomic(t *testing.T) {
	st, newHandler := setup(t)
	h := newHandler()
	ctx := context.Background()
	for _, s := range []string{"a", "b"} {
		if _, err := h.Execute(ctx, receive(s, 1)); err != nil {
			t.Fatal(err)
		}
	}
	both := func(qa, qb int64) command.Command[*stock] {
		return command.Command[*stock]{ID: ksuid.New().String(), Streams: []string{"b", "a"}, Fingerprint: command.Fingerprint{Kind: "both"},
			Decide: func(s map[string]*stock) (command.Decision, error) {
				if s["a"].free < qa || s["b"].free < qb {
					return command.Decision{}, command.Reject("out_of_stock", errNoStock)
				}
				return command.Decision{Events: map[string][]proto.Message{
					"a": {&stockv1.StockReserved{Quantity: qa}}, "b": {&stockv1.StockReserved{Quantity: qb}}}}, nil
			}}
	}
	if _, err := h.Execute(ctx, both(1, 2)); !command.IsRejection(err) {
		t.Fatalf("err = %v, want a rejection", err)
	}
	if count(t, st, "a") != 1 || count(t, st, "b") != 1 {
		t.Fatal("a refused multi-stream command wrote events")
	}
	if _, err := h.Execute(ctx, both(1, 1)); err != nil {
		t.Fatal(err)
	}
	if count(t, st, "a") != 2 || count(t, st, "b") != 2 {
		t.Fatal("an accepted multi-stream command did not write to both streams")
	}
	bad := command.Command[*stock]{ID: "x", Streams: []string{"a"}, Fingerprint: command.Fingerprint{Kind: "bad"}, Decide: func(map[string]*stock) (command.Decision, error) {
		return command.Decision{Events: map[string][]proto.Message{"elsewhere": {&stockv1.StockReceived{}}}}, nil
	}}
	if _, err := h.Execute(ctx, bad); !errors.Is(err, command.ErrInvalidCommand) {
		t.Fatalf("writing to an unloaded stream: err = %v", err)
	}
	// A command must say what it is, so its id can be held to it.
	unnamed := both(1, 1)
	unnamed.Fingerprint = command.Fingerprint{}
	if _, err := h.Execute(ctx, unnamed); !errors.Is(err, command.ErrInvalidCommand) {
		t.Fatalf("a command without a fingerprint's kind: err = %v", err)
	}
}

// TestStatementsCommitWithEvents: a decision's statements land in the
// command's transaction, and a failing one stores nothing of its command.
func TestStatementsCommitWithEvents(t *testing.T) {
	st, newHandler := setup(t)
	h := newHandler()
	ctx := context.Background()
	if _, err := st.Pool().Exec(ctx, `CREATE TABLE noted (cmd text PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	note := func(id string, sql string) command.Command[*stock] {
		return command.Command[*stock]{ID: id, Streams: []string{"s"}, Fingerprint: command.Fingerprint{Kind: "note", Input: sql},
			Decide: func(map[string]*stock) (command.Decision, error) {
				return command.Decision{
					Events:     map[string][]proto.Message{"s": {&stockv1.StockReceived{Quantity: 1}}},
					Statements: []command.Statement{{SQL: sql, Args: []any{id}}},
				}, nil
			}}
	}
	if _, err := h.Execute(ctx, note("ok-1", `INSERT INTO noted VALUES ($1)`)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Execute(ctx, note("bad-1", `INSERT INTO missing_table VALUES ($1)`)); err == nil {
		t.Fatal("a command whose statement fails was accepted")
	}
	var n int
	if err := st.Pool().QueryRow(ctx, `SELECT count(*) FROM noted`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("noted rows = %d, %v; want 1", n, err)
	}
	if c := count(t, st, "s"); c != 1 {
		t.Fatalf("stream has %d events, want 1 (the failed command's must not be stored)", c)
	}
}

// TestCommandIDNamesOneCommand: an id seen again with the same fingerprint
// (even with another command_id inside the input) replays; with another
// kind, target or input it is refused, naming the first command, and
// changes nothing; an id stored before fingerprints replays as before.
func TestCommandIDNamesOneCommand(t *testing.T) {
	st, newHandler := setup(t)
	h := newHandler()
	ctx := context.Background()
	receiveAs := func(id, sku string, qty int64, kind string) command.Command[*stock] {
		c := receive(sku, qty)
		c.ID = id
		c.Fingerprint = command.Fingerprint{Kind: kind, Target: sku,
			Input: &stockv1.ReceiveStock{CommandId: id, Sku: sku, WarehouseId: "wh", Quantity: qty}}
		return c
	}
	if _, err := h.Execute(ctx, receiveAs("c1", "a", 5, "ReceiveStock")); err != nil {
		t.Fatal(err)
	}
	same := receiveAs("c1", "a", 5, "ReceiveStock")
	same.Fingerprint.Input.(*stockv1.ReceiveStock).CommandId = "as-sent-elsewhere"
	if res, err := newHandler().Execute(ctx, same); err != nil || !res.Replayed {
		t.Fatalf("same command again = %+v, %v; want a replay", res, err)
	}
	for name, other := range map[string]command.Command[*stock]{
		"kind":   receiveAs("c1", "a", 5, "AdjustStock"),
		"target": receiveAs("c1", "b", 5, "ReceiveStock"),
		"input":  receiveAs("c1", "a", 6, "ReceiveStock"),
	} {
		_, err := newHandler().Execute(ctx, other)
		var rej *command.Rejection
		var reused *command.IDReused
		if !errors.As(err, &rej) || rej.Code != command.CodeIDReused || !errors.Is(err, command.ErrIDReused) ||
			!errors.As(err, &reused) || reused.Kind != "ReceiveStock" || reused.Target != "a" || reused.ID != "c1" {
			t.Fatalf("other %s: err = %v; want a command_id_reused rejection naming ReceiveStock on a", name, err)
		}
	}
	if count(t, st, "a") != 1 || count(t, st, "b") != 0 {
		t.Fatal("a reused command id wrote events")
	}
	// The first outcome stands: the first command still replays.
	if res, err := h.Execute(ctx, receiveAs("c1", "a", 5, "ReceiveStock")); err != nil || !res.Replayed {
		t.Fatalf("first command after the refusals = %+v, %v; want a replay", res, err)
	}
	// Go structs: CommandID is left out too.
	type adjust struct {
		CommandID, SKU string
		Delta          int64
	}
	adj := func(id string, in adjust) command.Command[*stock] {
		c := receive("a", 1)
		c.ID, c.Fingerprint = id, command.Fingerprint{Kind: "AdjustStock", Target: "a", Input: in}
		return c
	}
	if _, err := h.Execute(ctx, adj("c2", adjust{CommandID: "c2", SKU: "a", Delta: 1})); err != nil {
		t.Fatal(err)
	}
	if res, err := h.Execute(ctx, adj("c2", adjust{SKU: "a", Delta: 1})); err != nil || !res.Replayed {
		t.Fatalf("same struct input = %+v, %v; want a replay", res, err)
	}
	if _, err := h.Execute(ctx, adj("c2", adjust{SKU: "a", Delta: 2})); !errors.Is(err, command.ErrIDReused) {
		t.Fatalf("other struct input: err = %v; want ErrIDReused", err)
	}
	if _, err := st.Pool().Exec(ctx, `INSERT INTO processed_commands (command_id, outcome, response) VALUES ('old', 'accepted', 'kept')`); err != nil {
		t.Fatal(err)
	}
	if res, err := h.Execute(ctx, receiveAs("old", "a", 1, "ReceiveStock")); err != nil || !res.Replayed || string(res.Response) != "kept" {
		t.Fatalf("id stored without a fingerprint = %+v, %v; want its stored answer", res, err)
	}
}

// TestCommandIDReusedInOneBatch: two commands with one id and different
// fingerprints decided in the same batch: one is accepted, the other
// refused as a reused id, and only the first's event is stored.
func TestCommandIDReusedInOneBatch(t *testing.T) {
	st, err := pg.New(context.Background(), testenv.Pool(t), pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	h, err := command.New(context.Background(), st, codec.All(), toy, command.Options{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	ctx := context.Background()
	// Hold the only worker, so the two commands queue up in one lane.
	started, release := make(chan struct{}), make(chan struct{})
	slow := receive("slow", 1)
	slow.Decide = func(map[string]*stock) (command.Decision, error) {
		close(started)
		<-release
		return command.Decision{Events: map[string][]proto.Message{"slow": {&stockv1.StockReceived{Quantity: 1}}}}, nil
	}
	go func() { _, _ = h.Execute(ctx, slow) }()
	<-started
	errs := make(chan error, 2)
	for _, qty := range []int64{1, 2} {
		c := receive("x", qty)
		c.ID, c.Fingerprint = "dup", command.Fingerprint{Kind: "ReceiveStock", Target: "x", Input: &stockv1.ReceiveStock{Sku: "x", Quantity: qty}}
		go func() { _, err := h.Execute(ctx, c); errs <- err }()
	}
	time.Sleep(200 * time.Millisecond) // both queued behind the held worker
	close(release)
	var accepted, reused int
	for range 2 {
		switch err := <-errs; {
		case err == nil:
			accepted++
		case errors.Is(err, command.ErrIDReused):
			reused++
		default:
			t.Fatal(err)
		}
	}
	if accepted != 1 || reused != 1 || count(t, st, "x") != 1 {
		t.Fatalf("accepted %d, reused %d, events %d; want 1, 1, 1", accepted, reused, count(t, st, "x"))
	}
}

// TestFallbackGetsItsOwnDeadline: a batch that fails by running out of
// time (one command's decision is slow) falls back to running each command
// alone; each of those runs gets a deadline of its own, so the quick
// commands succeed (they failed with the batch's spent deadline before).
func TestFallbackGetsItsOwnDeadline(t *testing.T) {
	st, err := pg.New(context.Background(), testenv.Pool(t), pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	const timeout = 400 * time.Millisecond
	h, err := command.New(context.Background(), st, codec.All(), toy, command.Options{Workers: 1, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	ctx := context.Background()

	// The one worker is held by a first command, so the next three queue
	// up and are taken as one batch.
	release := make(chan struct{})
	first := receive("fb-first", 1)
	decideFirst := first.Decide
	first.Decide = func(s map[string]*stock) (command.Decision, error) { <-release; return decideFirst(s) }
	slow := receive("fb-slow", 1)
	decideSlow := slow.Decide
	slow.Decide = func(s map[string]*stock) (command.Decision, error) { time.Sleep(2 * timeout); return decideSlow(s) }

	var wg sync.WaitGroup
	errs := make(map[string]error)
	var mu sync.Mutex
	run := func(name string, cmd command.Command[*stock]) {
		defer wg.Done()
		_, err := h.Execute(ctx, cmd)
		mu.Lock()
		errs[name] = err
		mu.Unlock()
	}
	wg.Add(1)
	go run("first", first)
	time.Sleep(50 * time.Millisecond) // the worker has taken the first
	for name, cmd := range map[string]command.Command[*stock]{"slow": slow, "quick-1": receive("fb-quick-1", 1), "quick-2": receive("fb-quick-2", 1)} {
		wg.Add(1)
		go run(name, cmd)
	}
	time.Sleep(50 * time.Millisecond) // all three queued
	close(release)
	wg.Wait()

	if errs["first"] != nil {
		t.Fatalf("first: %v", errs["first"])
	}
	if errs["slow"] == nil {
		t.Errorf("the slow command succeeded; want it to run out of its time")
	}
	for _, name := range []string{"quick-1", "quick-2"} {
		if errs[name] != nil {
			t.Errorf("%s failed with its batch's spent deadline: %v", name, errs[name])
		}
	}
	for _, stream := range []string{"fb-quick-1", "fb-quick-2"} {
		if n := count(t, st, stream); n != 1 {
			t.Errorf("%s has %d events, want 1", stream, n)
		}
	}
}
