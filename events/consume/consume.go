// Package consume is the consumer runtime every projection, saga and
// command handler runs on: a Kafka consumer-group member that hands each
// partition's records, in order, to a Handler inside a PostgreSQL
// transaction, and commits the partition's checkpoint in that same
// transaction.
//
// # Delivery semantics
//
// Delivery is at least once: a record may be handed to the handler more
// than once (after a crash, a rebalance, a rolled-back batch, or because the
// producer wrote it twice). Effects are exactly once in the handler's own
// tables, provided the handler writes them only through the transaction it
// is given: the effects and the checkpoint commit together or not at all,
// and a record below the checkpoint is never handed out again. Effects
// outside that transaction (HTTP calls, produced records) are at least once
// and must be idempotent on their own. A topic that holds the same event
// twice (the relay may duplicate, never lose) is two records to this
// runtime; handlers dedupe by event id (ce_id) in their tables.
//
// # Offsets
//
// Offsets live in PostgreSQL (table consumer_checkpoints, created by
// Migrate), never in Kafka. A partition with no checkpoint starts at the
// earliest offset.
//
// # Failures
//
// A record whose handler fails is retried with backoff up to
// RetryPolicy.MaxAttempts times, each try inside a savepoint so the rest of
// the batch stands; then it is produced to its dead-letter topic
// (topic+".dlq", with the dlq-* headers) and the partition moves on. An
// infrastructure failure (database down, commit failed, Transient errors)
// is never the record's fault: the batch is rolled back and retried until
// it succeeds or the context ends.
//
// # Fencing
//
// Nothing is committed for a partition this member no longer owns: polls
// block rebalances until the poll's batches are committed, and the
// checkpoint write is a compare-and-set against the value the member last
// read or wrote, which stops a member that was kicked out of the group (a
// zombie) from committing over the partition's new owner. Both are needed.
// Blocking rebalances makes the ordinary hand-over clean (the old owner
// commits before the new one reads the checkpoint) but cannot stop a zombie:
// Kafka waits for a slow member only up to the rebalance timeout, then gives
// its partitions away while it is still inside its batch. The
// compare-and-set alone would be safe but would turn every ordinary
// hand-over into a race that one side loses with a rolled-back batch. On a
// failed compare-and-set the runtime rolls back, re-reads the row and
// re-seeks the partition to it.
//
// # Limits
//
// A record is retried inside its batch's transaction while rebalances wait,
// so MaxAttempts × MaxBackoff per poison record (25s with the defaults)
// should stay well under the rebalance timeout (60s by default); past it the
// member becomes a zombie, which the fence makes safe but slow. A dead
// letter is produced before its batch commits: if that commit then fails,
// the retry produces it again, so the dead-letter topic is at least once
// too (the redrive tool dedupes by ce_id).
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Handler applies one record. It is called with the batch's transaction
// (or a savepoint in it) and must write its effects only through tx, and
// must neither commit nor roll tx back. Records of one partition are handed
// over one at a time, in offset order; records of different partitions
// concurrently, so a Handler must be safe for concurrent use.
//
// Returning an error rolls back what the call wrote. The record is retried
// and, after the last attempt, dead-lettered; wrap the error with Permanent
// to dead-letter it at once, or with Transient to retry the whole batch
// without ever dead-lettering. A handler may see a record again after it
// returned nil (at-least-once delivery); only effects written through tx
// are guaranteed to be applied once.
type Handler interface {
	Handle(ctx context.Context, tx pgx.Tx, rec *kgo.Record) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, tx pgx.Tx, rec *kgo.Record) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, tx pgx.Tx, rec *kgo.Record) error {
	return f(ctx, tx, rec)
}

// Consumer is one member of a consumer group. Build it with New and call
// Run; its methods are safe for concurrent use.
type Consumer struct {
	cfg Config
	h   Handler
	m   *metrics
	log *slog.Logger

	running atomic.Bool

	mu  sync.Mutex
	cps map[tp]checkpoint // what this member knows of its partitions' checkpoints

	// beforeCommit, when set by tests, runs after the handler and before
	// the checkpoint write of every batch; an error fails the batch as an
	// infrastructure error would.
	beforeCommit func(ctx context.Context, tx pgx.Tx, t string, p int32, recs []*kgo.Record) error
}

type tp struct {
	topic     string
	partition int32
}

// New validates cfg (after applying defaults to its zero fields) and
// returns a Consumer that hands records to h. It registers the metrics on
// cfg.Registerer and does no other I/O.
func New(cfg Config, h Handler) (*Consumer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("consume: nil handler")
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("consume: register metrics: %w", err)
	}
	return &Consumer{
		cfg: cfg,
		h:   h,
		m:   m,
		log: cfg.Logger.With("component", "consume", "group", cfg.Group),
		cps: map[tp]checkpoint{},
	}, nil
}

// Run migrates the checkpoint table, joins the group and consumes until ctx
// ends. On cancellation it abandons (rolls back) the batches in flight,
// leaves the group and returns nil. It returns an error if it cannot start
// (database or broker unreachable, a topic or dead-letter topic missing) or
// if the client fails for good. Run may be called again once it returned
// (a supervisor restarting it after an outage), never twice at once.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("consume: Run called twice")
	}
	defer c.running.Store(false)
	c.mu.Lock()
	clear(c.cps) // a new client's assignment reloads them
	c.mu.Unlock()
	if err := Migrate(ctx, c.cfg.Pool); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	opts := []kgo.Opt{
		kgo.SeedBrokers(c.cfg.Brokers...),
		kgo.ConsumerGroup(c.cfg.Group),
		kgo.ConsumeTopics(c.cfg.Topics...),
		// Progress is the PostgreSQL checkpoint; Kafka's committed
		// offsets are never written nor read.
		kgo.DisableAutoCommit(),
		// A poll's batches are committed before any partition of it can
		// be revoked: an orderly hand-over never overlaps two owners.
		kgo.BlockRebalanceOnPoll(),
		// Never see records of aborted transactions (the relay may
		// produce transactionally).
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// No checkpoint, or a checkpoint outside the log (retention,
		// recreated topic): start from the earliest record.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Where to start each newly assigned partition: see adjust.
		kgo.AdjustFetchOffsetsFn(c.adjust),
		kgo.OnPartitionsRevoked(c.forget),
		kgo.OnPartitionsLost(c.forget),
		kgo.RequiredAcks(kgo.AllISRAcks()), // dead letters
	}
	if c.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(c.cfg.InstanceID))
	}
	cl, err := kgo.NewClient(append(opts, c.cfg.KafkaOpts...)...)
	if err != nil {
		return fmt.Errorf("consume: kafka client: %w", err)
	}
	defer cl.Close()

	if err := c.checkTopics(ctx, cl); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	c.log.Info("consumer started", "topics", c.cfg.Topics, "brokers", c.cfg.Brokers,
		"max_attempts", c.cfg.Retry.MaxAttempts, "max_poll_records", c.cfg.MaxPollRecords)

	err = c.loop(ctx, cl)

	// Leave the group now, so the partitions move to the other members at
	// once rather than after the session timeout. Every batch was committed
	// or rolled back and rebalances are allowed, so nothing is in flight.
	lctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if lerr := cl.LeaveGroupContext(lctx); lerr != nil {
		c.log.Warn("leave group", "err", lerr)
	}
	c.log.Info("consumer stopped", "err", err)
	return err
}

// checkTopics fails fast if a topic or its dead-letter topic is missing:
// the broker does not auto-create topics, and a missing dead-letter topic
// would only show when the first poison record blocks its partition.
func (c *Consumer) checkTopics(ctx context.Context, cl *kgo.Client) error {
	var want []string
	for _, t := range c.cfg.Topics {
		want = append(want, t, t+c.cfg.DLQSuffix)
	}
	details, err := kadm.NewClient(cl).ListTopics(ctx, want...)
	if err != nil {
		return fmt.Errorf("consume: list topics: %w", err)
	}
	var missing []string
	for _, t := range want {
		if d, ok := details[t]; !ok || d.Err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("consume: topics %v do not exist (create them, see EnsureDLQTopics)", missing)
	}
	return nil
}

// loop polls, processes the poll's partition batches concurrently, applies
// any re-seeks, and only then lets a rebalance proceed.
func (c *Consumer) loop(ctx context.Context, cl *kgo.Client) error {
	for {
		fs := cl.PollRecords(ctx, c.cfg.MaxPollRecords)
		if fs.IsClientClosed() {
			cl.AllowRebalance()
			return errors.New("consume: kafka client closed")
		}
		if ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			c.log.Warn("fetch error", "topic", t, "partition", p, "err", err)
		})

		var order []tp
		batches := map[tp][]*kgo.Record{}
		hwm := map[tp]int64{}
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			k := tp{p.Topic, p.Partition}
			if _, ok := batches[k]; !ok {
				order = append(order, k)
			}
			batches[k] = append(batches[k], p.Records...)
			if p.HighWatermark >= 0 {
				hwm[k] = max(hwm[k], p.HighWatermark)
			}
		})

		reseek := c.processAll(ctx, cl, order, batches)
		if len(reseek) > 0 {
			// Called from the polling goroutine before AllowRebalance, as
			// SetOffsets requires: no revoke can run in between. It drops
			// whatever the client buffered for these partitions.
			cl.SetOffsets(reseek)
		}
		c.updateLag(hwm)
		cl.AllowRebalance()
	}
}

// processAll runs one goroutine per partition batch, at most
// MaxConcurrentPartitions at once, and returns the partitions to re-seek.
// processChunks processes a partition's records in transactions of at most
// MaxBatchRecords each, in order; it stops at a re-seek (the rest comes
// again from the new offset).
func (c *Consumer) processChunks(ctx context.Context, cl *kgo.Client, k tp, recs []*kgo.Record) (int64, bool) {
	n := c.cfg.MaxBatchRecords
	if n <= 0 {
		n = len(recs)
	}
	for len(recs) > 0 && ctx.Err() == nil {
		chunk := recs[:min(n, len(recs))]
		recs = recs[len(chunk):]
		if to, ok := c.processBatch(ctx, cl, k, chunk); ok {
			return to, true
		}
	}
	return 0, false
}

func (c *Consumer) processAll(ctx context.Context, cl *kgo.Client, order []tp, batches map[tp][]*kgo.Record) map[string]map[int32]kgo.EpochOffset {
	var (
		wg     sync.WaitGroup
		sem    = make(chan struct{}, c.cfg.MaxConcurrentPartitions)
		mu     sync.Mutex
		reseek map[string]map[int32]kgo.EpochOffset
	)
	for _, k := range order {
		recs := batches[k]
		if len(recs) == 0 {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			to, ok := c.processChunks(ctx, cl, k, recs)
			if ok {
				mu.Lock()
				defer mu.Unlock()
				if reseek == nil {
					reseek = map[string]map[int32]kgo.EpochOffset{}
				}
				if reseek[k.topic] == nil {
					reseek[k.topic] = map[int32]kgo.EpochOffset{}
				}
				reseek[k.topic][k.partition] = kgo.EpochOffset{Epoch: -1, Offset: to}
			}
		})
	}
	wg.Wait()
	return reseek
}

// adjust is the AdjustFetchOffsetsFn: it replaces the offsets the client
// read from Kafka (none: we never commit there) with the PostgreSQL
// checkpoints, for the partitions just assigned.
//
// Why this hook and not OnPartitionsAssigned + SetOffsets: the client calls
// it after the assignment and before it starts fetching the new
// partitions, and fetches from exactly what it returns, so no record below
// the checkpoint is ever fetched, and there is no window in which the
// client first seeks to its own reset offset. It runs in the group
// goroutine, serially with the revoke of the same session, and a returned
// error (database down) ends the session and rejoins with backoff instead
// of consuming from a wrong place. SetOffsets from OnPartitionsAssigned
// would instead race with the client's own offset fetch for the same
// partitions.
func (c *Consumer) adjust(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	for topic, parts := range offsets {
		ps := make([]int32, 0, len(parts))
		for p := range parts {
			ps = append(ps, p)
		}
		slices.Sort(ps)
		got, err := loadCheckpoints(ctx, c.cfg.Pool, c.cfg.Group, topic, ps)
		if err != nil {
			c.log.Error("load checkpoints on assignment", "topic", topic, "err", err)
			return nil, err
		}
		c.mu.Lock()
		for _, p := range ps {
			if n, ok := got[p]; ok {
				// WithEpoch(-1): the checkpoint knows no leader epoch, so
				// skip the client's truncation check for it.
				parts[p] = kgo.NewOffset().At(n).WithEpoch(-1)
				c.cps[tp{topic, p}] = checkpoint{next: n, exists: true}
			} else {
				parts[p] = kgo.NewOffset().AtStart()
				c.cps[tp{topic, p}] = checkpoint{}
			}
		}
		c.mu.Unlock()
		c.log.Info("partitions assigned", "topic", topic, "partitions", ps, "checkpoints", got)
	}
	return offsets, nil
}

// forget is the OnPartitionsRevoked and OnPartitionsLost callback: it drops
// what this member knew of partitions it no longer owns. With
// BlockRebalanceOnPoll it never runs while a batch is processed.
func (c *Consumer) forget(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for topic, ps := range lost {
		for _, p := range ps {
			delete(c.cps, tp{topic, p})
			c.m.lag.DeleteLabelValues(c.cfg.Group, topic, strconv.Itoa(int(p)))
		}
		if len(ps) > 0 {
			c.log.Info("partitions revoked", "topic", topic, "partitions", ps)
		}
	}
}

func (c *Consumer) updateLag(hwm map[tp]int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, h := range hwm {
		cp, ok := c.cps[k]
		if !ok {
			continue
		}
		c.m.lag.WithLabelValues(c.cfg.Group, k.topic, strconv.Itoa(int(k.partition))).Set(float64(max(0, h-cp.next)))
	}
}

func (c *Consumer) known(k tp) (checkpoint, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp, ok := c.cps[k]
	return cp, ok
}

func (c *Consumer) setKnown(k tp, cp checkpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cps[k] = cp
}
