// Package app is the checkout saga's process manager: it consumes the other
// contexts' events (carts.events, orders.events, stock.events,
// payments.events) with events/consume, one consumer group
// ("checkout-saga"), and fires the saga's durable timers.
//
// # One transaction per batch, with its checkpoint
//
// For each input the saga finds the checkout the event belongs to, takes
// the append locks of the checkout's two streams, folds "checkout-<id>"
// from its event store, decides (package domain), and writes:
//
//   - the saga's events to "checkout-<id>", at the exact version it read;
//   - the commands to send to "outbox-<id>", each stored as an event whose
//     type is the command message's name; the relay (Route) publishes the
//     store's checkout.v1 events to checkout.events and the commands to
//     <context>.commands by their package, keyed by the stream id, so all
//     commands of one checkout are in order on each topic;
//   - its timers (checkout_timers) and its row in checkout_sagas (status,
//     start, for the in-flight metrics).
//
// A partition's batch of inputs is applied in the consumer's transaction
// (HandleBatch), so state, commands, timers and the consumer's checkpoint
// commit together or not at all: effects are exactly once, and a batch
// costs one commit.
//
// The store orders a stream's events by (tx_id, position), so a
// transaction must hold a stream's lock before its first write: one that
// had written checkout A and then waited for checkout B's lock would append
// to B under a transaction id older than the one it waited for, and the
// relay would publish B out of version order (a CancelOrder before its
// PlaceOrder). A batch therefore takes the locks of all its checkouts at
// once, in one sorted call, before anything else; sorted, batches and
// timers cannot deadlock on each other.
//
// When a batch fails on a record (a poison event), it is rolled back and
// runs again record by record through Handle, each input in a transaction
// of its own and the consumer's transaction carrying only the checkpoint:
// a crash between the two hands the record over again, and it meets a
// state that has already moved, so the domain decides nothing (every input
// is idempotent against the state; the domain's tests hold it).
//
// Timers run through the same path in their own transaction: the worker
// claims due rows (services/kit/timers), and for each locks the checkout's
// streams, re-reads the row (it may have been cancelled or re-armed
// meanwhile), deletes it and hands the domain a TimerFired; a crash before
// the commit leaves the row to fire again, a failure backs it off without
// holding up the others.
//
// Events are tied to checkouts by their checkout_id field, else by the
// order or payment id, which the saga derives from the checkout id
// (domain.OrderID, domain.PaymentID). Events of orders or payments that
// belong to no checkout are ignored.
package app

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	cartsv1 "github.com/keel-commerce/keel/events/carts/v1"
	checkoutv1 "github.com/keel-commerce/keel/events/checkout/v1"
	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/consume"
	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/migrate"
	"github.com/keel-commerce/keel/events/store"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/keel-commerce/keel/services/checkout/domain"
	"github.com/keel-commerce/keel/services/kit/timers"
)

// Group is the saga's consumer group. Renaming it replays every topic from
// the start (harmless, every input is idempotent, but slow).
const Group = "checkout-saga"

// Stream prefixes in the saga's store.
const (
	StreamPrefix = "checkout-"
	OutboxPrefix = "outbox-"
)

// Stream is the stream of a checkout's saga events.
func Stream(checkoutID string) string { return StreamPrefix + checkoutID }

// Outbox is the stream of a checkout's outgoing commands.
func Outbox(checkoutID string) string { return OutboxPrefix + checkoutID }

// InputTopics are the topics the saga consumes.
func InputTopics() []string {
	return []string{topics.Events("carts"), topics.Events("orders"), topics.Events("stock"), topics.Events("payments")}
}

// Route picks the topic of a stored event for the relay: the saga's own
// events go to checkout.events, commands to the commands topic of their
// context (keel.<context>.v1.X → <context>.commands). prefix is prepended
// to every topic name (tests; "" in production).
func Route(prefix string) func(envelope.Event) string {
	return func(ev envelope.Event) string {
		ctx, ok := strings.CutPrefix(ev.Type, "keel.")
		if i := strings.IndexByte(ctx, '.'); ok && i > 0 {
			ctx = ctx[:i]
			if ctx == "checkout" {
				return prefix + topics.Events("checkout")
			}
			return prefix + topics.Commands(ctx)
		}
		return prefix + topics.Events("checkout")
	}
}

// Config configures a Saga.
type Config struct {
	// Store is the saga's event store (keel_checkout); the consumer's
	// checkpoints may live in the same database.
	Store *pg.Store
	// Domain holds the timeouts.
	Domain domain.Config
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
	// Logger (default discarded).
	Logger *slog.Logger
	// Metrics, when set, counts sagas (see NewMetrics).
	Metrics *Metrics
	// Committed, when set, is called after an input's transaction has
	// committed, with the saga events it recorded (none: nothing changed).
	// Fault injection (cmd/checkout's KEEL_CRASH_AT) and tests; it runs on
	// the consumer's and the timer worker's goroutines and must not block.
	Committed func(checkoutID string, events []proto.Message)
}

// Saga is the process manager. It is a consume.Handler; all methods are
// safe for concurrent use.
type Saga struct {
	cfg Config
	reg *codec.Registry
	log *slog.Logger

	mu       sync.Mutex
	watchers map[string][]watcher // by checkout id
	pending  map[pgx.Tx][]change  // batch transaction → what it recorded, until it ends

	timers *timers.Queue
}

// watcher is a long poll's wait for a checkout's next change (or its end).
type watcher struct {
	ch    chan struct{} // closed when it fires
	ended bool          // fire only when the checkout completes or fails
}

// change is what one input recorded for a checkout.
type change struct {
	id       string
	recorded []proto.Message
}

// New migrates the saga's tables (checkout_timers, checkout_sagas) and
// returns the saga with its timer queue.
func New(ctx context.Context, cfg Config) (*Saga, error) {
	if cfg.Store == nil {
		return nil, errors.New("checkout saga: no store")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := Migrate(ctx, cfg.Store.Pool()); err != nil {
		return nil, fmt.Errorf("checkout saga: %w", err)
	}
	s := &Saga{cfg: cfg, reg: codec.All(), log: cfg.Logger.With("component", "checkout-saga"),
		watchers: map[string][]watcher{}, pending: map[pgx.Tx][]change{}}
	var err error
	if s.timers, err = timers.New(s.Pool(), timers.Config{
		Name: "checkout", Table: "checkout_timers", Key: []string{"checkout_id", "kind"},
		Fire: s.fireTimer, Now: cfg.Now, Logger: s.log, Registerer: cfg.Metrics.registerer(),
	}); err != nil {
		return nil, fmt.Errorf("checkout saga: %w", err)
	}
	return s, nil
}

// VersionTable is the goose version table of the saga's migrations
// (checkout_timers, checkout_sagas), so they evolve apart from the event
// store's.
const VersionTable = "goose_checkout_version"

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates or upgrades the saga's tables; replicas starting
// together are serialized by migrate's session lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrate.UpDir(ctx, pool, migrations, "migrations", VersionTable)
}

// Transition names what a recorded saga event did, for fault injection
// and logs: "started", "step:<step>" (e.g. step:reserve_stock),
// "compensating", "compensated:<step>", "timed_out", "completed", "failed",
// "payment_reconciling";
// "" for anything else.
func Transition(ev proto.Message) string {
	switch e := ev.(type) {
	case *checkoutv1.CheckoutStarted:
		return "started"
	case *checkoutv1.CheckoutStepCompleted:
		return "step:" + codec.EnumName(e.GetStep())
	case *checkoutv1.CheckoutCompensating:
		return "compensating"
	case *checkoutv1.CheckoutStepCompensated:
		return "compensated:" + codec.EnumName(e.GetStep())
	case *checkoutv1.CheckoutTimedOut:
		return "timed_out"
	case *checkoutv1.CheckoutCompleted:
		return "completed"
	case *checkoutv1.CheckoutFailed:
		return "failed"
	case *checkoutv1.CheckoutPaymentReconciling:
		return "payment_reconciling"
	}
	return ""
}

// Pool is the saga's database.
func (s *Saga) Pool() *pgxpool.Pool { return s.cfg.Store.Pool() }

// Handle applies one record of an input topic in a transaction of its own
// (the slow path of the package comment; the consumer's transaction only
// carries the checkpoint). A record that is not a Keel event, or an invalid checkout
// request, is dead-lettered (consume.Permanent); events the saga does not
// take, or of no checkout it runs, are skipped.
func (s *Saga) Handle(ctx context.Context, _ pgx.Tx, rec *kgo.Record) error {
	in, ok, err := s.inputOf(rec)
	if err != nil || !ok {
		return err
	}
	var recorded []proto.Message
	if err := pgx.BeginFunc(ctx, s.Pool(), func(tx pgx.Tx) (err error) {
		recorded, err = s.apply(ctx, tx, in.id, in.msg, in.cause)
		return err
	}); err != nil {
		return err
	}
	s.committed(in.id, recorded)
	// Wake the relay now rather than at its idle poll: the outbox commands
	// just committed are the saga's next step.
	s.cfg.Store.Notify()
	return nil
}

// sagaInput is a record of an input topic the saga acts on.
type sagaInput struct {
	id, cause string // the checkout; the event's id
	msg       proto.Message
}

// inputOf decodes rec; ok is false for events the saga does not take or
// of no checkout. A record that is not a Keel event, or whose payload does
// not decode, is an error (poison).
func (s *Saga) inputOf(rec *kgo.Record) (sagaInput, bool, error) {
	ev, err := consume.DecodeEvent(rec)
	if err != nil {
		return sagaInput{}, false, err
	}
	if !input(ev.Type) {
		return sagaInput{}, false, nil
	}
	msg, err := s.reg.Decode(ev.Type, ev.Payload)
	if err != nil {
		return sagaInput{}, false, consume.Permanent(fmt.Errorf("checkout saga: %s %s: %w", ev.Type, ev.ID, err))
	}
	id, ok := CheckoutOf(msg)
	return sagaInput{id: id, cause: ev.ID.String(), msg: msg}, ok, nil
}

var (
	_ consume.BatchHandler = (*Saga)(nil)
	_ consume.FinishHook   = (*Saga)(nil)
)

// HandleBatch applies a partition's batch in the consumer's transaction,
// with its checkpoint: one commit for the batch instead of two per record.
// It takes the append locks of every checkout of the batch at once, in one
// sorted call, before its first write, which keeps the store's rule (a
// stream's appends commit in the order of their transaction ids, see the
// package comment) and cannot deadlock with another batch or a timer.
// Any failure (a poison record) rolls the batch back and the runtime runs
// it again through Handle, a transaction per record, which finds the
// culprit. What the batch recorded takes effect outside the database in
// Finished, once it has committed.
func (s *Saga) HandleBatch(ctx context.Context, tx pgx.Tx, recs []*kgo.Record) error {
	items := make([]sagaInput, 0, len(recs))
	streams := make([]string, 0, 2*len(recs))
	for _, rec := range recs {
		in, ok, err := s.inputOf(rec)
		if err != nil {
			return err
		}
		if ok {
			items = append(items, in)
			streams = append(streams, Stream(in.id), Outbox(in.id))
		}
	}
	if len(items) == 0 {
		return nil
	}
	if err := s.cfg.Store.Lock(ctx, tx, streams...); err != nil {
		return fmt.Errorf("lock %d checkouts: %w", len(items), err)
	}
	var changes []change
	for _, it := range items {
		recorded, err := s.apply(ctx, tx, it.id, it.msg, it.cause)
		if err != nil {
			return err
		}
		changes = append(changes, change{id: it.id, recorded: recorded})
	}
	s.mu.Lock()
	s.pending[tx] = changes
	s.mu.Unlock()
	return nil
}

// Finished implements consume.FinishHook: a committed batch's changes wake
// their long polls, reach the Committed hook, and wake the relay.
func (s *Saga) Finished(tx pgx.Tx, committed bool) {
	s.mu.Lock()
	changes, ok := s.pending[tx]
	delete(s.pending, tx)
	s.mu.Unlock()
	if !ok || !committed {
		return
	}
	for _, c := range changes {
		s.committed(c.id, c.recorded)
	}
	s.cfg.Store.Notify()
}

var inputs = []string{
	"keel.carts.v1.CheckoutRequested",
	"keel.orders.v1.OrderPlaced", "keel.orders.v1.OrderConfirmed", "keel.orders.v1.OrderPaid", "keel.orders.v1.OrderCancelled",
	"keel.stock.v1.OrderAllocated", "keel.stock.v1.StockReserved", "keel.stock.v1.AllocationFailed", "keel.stock.v1.ReservationCommitted",
	"keel.stock.v1.ReservationReleased", "keel.stock.v1.ReservationExpired",
	"keel.payments.v1.PaymentAuthorized", "keel.payments.v1.PaymentDeclined", "keel.payments.v1.PaymentAuthorizationTimedOut",
	"keel.payments.v1.PaymentCaptured", "keel.payments.v1.PaymentVoided", "keel.payments.v1.PaymentRefunded",
}

func input(typ string) bool { return slices.Contains(inputs, typ) }

// CheckoutOf returns the checkout an input event belongs to.
func CheckoutOf(msg proto.Message) (string, bool) {
	type checkoutIDer interface{ GetCheckoutId() string }
	type orderIDer interface{ GetOrderId() string }
	type paymentIDer interface{ GetPaymentId() string }
	if m, ok := msg.(checkoutIDer); ok && m.GetCheckoutId() != "" {
		return m.GetCheckoutId(), true
	}
	if m, ok := msg.(paymentIDer); ok {
		if id, ok := domain.CheckoutIDOfPayment(m.GetPaymentId()); ok {
			return id, true
		}
	}
	if m, ok := msg.(orderIDer); ok {
		return domain.CheckoutIDOfOrder(m.GetOrderId())
	}
	return "", false
}

// load folds a checkout's stream in tx.
func (s *Saga) load(ctx context.Context, q interface {
	ReadStreamTx(context.Context, pgx.Tx, string, int64, int) ([]envelope.Event, error)
}, tx pgx.Tx, id string) (*domain.Checkout, error) {
	evs, err := q.ReadStreamTx(ctx, tx, Stream(id), 1, 1<<20)
	if err != nil {
		return nil, err
	}
	return s.fold(id, evs)
}

func (s *Saga) fold(id string, evs []envelope.Event) (*domain.Checkout, error) {
	c := domain.New(s.cfg.Domain)
	for _, e := range evs {
		m, err := s.reg.Decode(e.Type, e.Payload)
		if err != nil {
			return nil, fmt.Errorf("checkout %s: event %d: %w", id, e.Version, err)
		}
		c.Apply(m)
	}
	return c, nil
}

func (s *Saga) committed(id string, recorded []proto.Message) {
	if len(recorded) > 0 {
		ended := slices.ContainsFunc(recorded, func(m proto.Message) bool {
			t := Transition(m)
			return t == "completed" || t == "failed"
		})
		s.mu.Lock()
		kept := s.watchers[id][:0]
		for _, w := range s.watchers[id] {
			if w.ended && !ended {
				kept = append(kept, w)
				continue
			}
			close(w.ch)
		}
		if len(kept) == 0 {
			delete(s.watchers, id)
		} else {
			s.watchers[id] = kept
		}
		s.mu.Unlock()
	}
	if s.cfg.Committed != nil {
		s.cfg.Committed(id, recorded)
	}
}

// Changed returns a channel closed when this process next records events
// for the checkout (with ended, only events that complete or fail it), and
// a func to call when no longer waiting. Another replica's changes do not
// close it: a waiter re-reads on a timer too.
func (s *Saga) Changed(id string, ended bool) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.watchers[id] = append(s.watchers[id], watcher{ch: ch, ended: ended})
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		list := s.watchers[id]
		if i := slices.IndexFunc(list, func(w watcher) bool { return w.ch == ch }); i >= 0 {
			list = slices.Delete(list, i, i+1)
		}
		if len(list) == 0 {
			delete(s.watchers, id)
		} else {
			s.watchers[id] = list
		}
	}
}

// apply is the one path of every input: lock, load, decide, write. It
// returns the saga events it recorded.
func (s *Saga) apply(ctx context.Context, tx pgx.Tx, id string, in any, causation string) ([]proto.Message, error) {
	st := s.cfg.Store
	if err := st.Lock(ctx, tx, Stream(id), Outbox(id)); err != nil {
		return nil, fmt.Errorf("lock checkout %s: %w", id, err)
	}
	c, err := s.load(ctx, st, tx, id)
	if err != nil {
		return nil, fmt.Errorf("load checkout %s: %w", id, err)
	}
	if _, start := in.(*cartsv1.CheckoutRequested); c.Status() == domain.StatusNew && !start {
		s.log.DebugContext(ctx, "event for no running checkout", "checkout_id", id, "type", fmt.Sprintf("%T", in))
		return nil, nil
	}
	before, version := c.Status(), c.Version()
	now := s.cfg.Now()
	d, err := c.Handle(in, now)
	if err != nil {
		if errors.Is(err, domain.ErrInvalid) || errors.Is(err, domain.ErrUnknownInput) {
			return nil, consume.Permanent(fmt.Errorf("checkout %s: %w", id, err))
		}
		return nil, fmt.Errorf("checkout %s: %w", id, err)
	}
	if d.Empty() {
		return nil, nil
	}
	var appends []pg.StreamAppend
	if len(d.Events) > 0 {
		evs, err := s.envelopes(id, causation, d.Events)
		if err != nil {
			return nil, err
		}
		appends = append(appends, pg.StreamAppend{Stream: Stream(id), Expected: store.Exact(version), Events: evs})
	}
	if len(d.Commands) > 0 {
		cmds, err := s.envelopes(id, causation, d.Commands)
		if err != nil {
			return nil, err
		}
		appends = append(appends, pg.StreamAppend{Stream: Outbox(id), Expected: store.Any, Events: cmds})
	}
	if len(appends) > 0 {
		if _, err := st.AppendManyTx(ctx, tx, appends); err != nil {
			return nil, fmt.Errorf("append checkout %s: %w", id, err)
		}
	}
	for _, k := range d.Cancel {
		if _, err := tx.Exec(ctx, `DELETE FROM checkout_timers WHERE checkout_id = $1 AND kind = $2`, id, string(k)); err != nil {
			return nil, fmt.Errorf("cancel timer %s/%s: %w", id, k, err)
		}
	}
	for _, t := range d.Arm {
		if _, err := tx.Exec(ctx, `INSERT INTO checkout_timers (checkout_id, kind, due_at) VALUES ($1, $2, $3)
			ON CONFLICT (checkout_id, kind) DO UPDATE SET due_at = EXCLUDED.due_at, attempts = 0, retry_at = NULL, last_error = NULL`,
			id, string(t.Kind), t.Due); err != nil {
			return nil, fmt.Errorf("arm timer %s/%s: %w", id, t.Kind, err)
		}
	}
	if c.Status() != before {
		if _, err := tx.Exec(ctx, `INSERT INTO checkout_sagas (checkout_id, status, started_at, updated_at) VALUES ($1, $2, $3, $3)
			ON CONFLICT (checkout_id) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at`,
			id, c.Status().String(), now); err != nil {
			return nil, fmt.Errorf("checkout %s status: %w", id, err)
		}
	}
	s.cfg.Metrics.observe(d, c)
	return d.Events, nil
}

func (s *Saga) envelopes(id, causation string, msgs []proto.Message) ([]envelope.Event, error) {
	out := make([]envelope.Event, 0, len(msgs))
	for _, m := range msgs {
		typ, payload, err := s.reg.Encode(m)
		if err != nil {
			return nil, fmt.Errorf("checkout %s: encode %T: %w", id, m, err)
		}
		out = append(out, envelope.Event{ID: ksuid.New(), Type: typ, Payload: payload, CorrelationID: id, CausationID: causation})
	}
	return out, nil
}

// Get returns a checkout folded from its stream; ok is false when it never
// started.
func (s *Saga) Get(ctx context.Context, id string) (*domain.Checkout, bool, error) {
	evs, err := s.cfg.Store.ReadStream(ctx, Stream(id), 1, 1<<20)
	if err != nil {
		return nil, false, fmt.Errorf("read checkout %s: %w", id, err)
	}
	if len(evs) == 0 {
		return nil, false, nil
	}
	c, err := s.fold(id, evs)
	return c, err == nil, err
}

// Commands returns the commands a checkout put on its outbox, in order.
func (s *Saga) Commands(ctx context.Context, id string) ([]proto.Message, error) {
	evs, err := s.cfg.Store.ReadStream(ctx, Outbox(id), 1, 1<<20)
	if err != nil {
		return nil, err
	}
	out := make([]proto.Message, 0, len(evs))
	for _, e := range evs {
		m, err := s.reg.Decode(e.Type, e.Payload)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// FireDue fires every timer due at the clock's now, each in its own
// transaction, and returns how many it fired; a failing one is backed off
// (services/kit/timers) and the others carry on.
func (s *Saga) FireDue(ctx context.Context) (int, error) { return s.timers.FireDue(ctx) }

func (s *Saga) fireTimer(ctx context.Context, t timers.Timer) (bool, error) {
	return s.fire(ctx, t.Key[0], domain.TimerKind(t.Key[1]), s.cfg.Now())
}

func (s *Saga) fire(ctx context.Context, id string, kind domain.TimerKind, now time.Time) (bool, error) {
	fired := false
	var recorded []proto.Message
	err := pgx.BeginFunc(ctx, s.Pool(), func(tx pgx.Tx) error {
		if err := s.cfg.Store.Lock(ctx, tx, Stream(id), Outbox(id)); err != nil {
			return err
		}
		var dueAt time.Time
		err := tx.QueryRow(ctx, `DELETE FROM checkout_timers WHERE checkout_id = $1 AND kind = $2 AND due_at <= $3 RETURNING due_at`,
			id, string(kind), now).Scan(&dueAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // cancelled or re-armed meanwhile
		}
		if err != nil {
			return err
		}
		fired = true
		recorded, err = s.apply(ctx, tx, id, domain.TimerFired{Kind: kind, Due: dueAt}, "timer:"+string(kind))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("fire %s timer of checkout %s: %w", kind, id, err)
	}
	if fired {
		s.committed(id, recorded)
		s.cfg.Store.Notify()
	}
	return fired, nil
}

// RunTimers fires due timers every interval until ctx ends, and refreshes
// the in-flight gauges. Errors are logged and retried on the next tick.
func (s *Saga) RunTimers(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := s.FireDue(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "checkout timers", "err", err)
		}
		if err := s.timers.Observe(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "checkout timer gauges", "err", err)
		}
		if err := s.cfg.Metrics.refresh(ctx, s.Pool(), s.cfg.Now()); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "checkout gauges", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
