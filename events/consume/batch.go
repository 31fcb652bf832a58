package consume

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// batchState is what survives the retries of one partition batch.
type batchState struct {
	slow     bool          // a record failed: handle each record in a savepoint
	attempts map[int]int   // failed handler calls, by index in the batch
	lastErr  map[int]error // the last handler error, by index
	dead     map[int]bool  // already produced to the dead-letter topic
}

// BatchHandler is a Handler that can also apply a partition's records in
// one call, with fewer round trips (a read model loads the rows a batch
// touches at once and writes them back at once). The runtime calls
// HandleBatch first; if it fails with anything but an infrastructure error,
// everything is rolled back and the batch runs again through Handle, record
// by record, each in a savepoint, so a poison record is retried and
// dead-lettered exactly as without HandleBatch. HandleBatch must have the
// same effects as Handle on each record in order.
type BatchHandler interface {
	Handler
	HandleBatch(ctx context.Context, tx pgx.Tx, recs []*kgo.Record) error
}

// FinishHook is a Handler that wants to know how a batch transaction it
// worked in ended: Finished is called once per transaction the runtime
// began, after its commit (committed true) or its rollback, with the
// transaction as it was passed to HandleBatch or Handle (a key: it is no
// longer usable). Effects outside the database that must follow the
// commit (waking waiters, fault injection) go there.
type FinishHook interface {
	Finished(tx pgx.Tx, committed bool)
}

// errRecordFailed makes the fast path fall back to the savepoint path.
var errRecordFailed = errors.New("a record of the batch failed")

// processBatch applies recs (one partition's records of a poll, in offset
// order) and commits them with the partition's checkpoint. It retries
// infrastructure errors until it succeeds or ctx ends (then it abandons the
// batch: everything is rolled back). It returns an offset to re-seek the
// partition to, and true, when the checkpoint compare-and-set found that
// another member had moved the partition on.
func (c *Consumer) processBatch(ctx context.Context, cl *kgo.Client, k tp, recs []*kgo.Record) (int64, bool) {
	log := c.log.With("topic", k.topic, "partition", k.partition)
	cp, ok := c.known(k)
	if !ok {
		// Cannot happen while adjust runs for every assigned partition;
		// read the row rather than guess.
		var err error
		if cp, err = c.reload(ctx, k); err != nil {
			return 0, false // ctx ended
		}
		log.Warn("batch for a partition without a known checkpoint; reloaded", "next_offset", cp.next)
	}
	// Records below the checkpoint are applied already (the client may
	// still hold some fetched before a re-seek).
	first := 0
	for first < len(recs) && recs[first].Offset < cp.next {
		first++
	}
	recs = recs[first:]
	if len(recs) == 0 {
		return 0, false
	}
	next := recs[len(recs)-1].Offset + 1

	st := &batchState{attempts: map[int]int{}, lastErr: map[int]error{}, dead: map[int]bool{}}
	for n := 1; ; n++ {
		err := c.tryBatch(ctx, cl, k, cp, next, recs, st)
		switch {
		case err == nil:
			c.setKnown(k, checkpoint{next: next, exists: true})
			c.m.handled.WithLabelValues(c.cfg.Group, k.topic).Add(float64(len(recs) - len(st.dead)))
			return 0, false
		case errors.Is(err, errRecordFailed):
			st.slow = true
			n-- // not an infrastructure retry
			continue
		case errors.Is(err, errConflict):
			// Another member committed this partition past where we last
			// left it: we are (or were) a zombie, or an operator moved the
			// checkpoint. Our batch is rolled back; start over from the
			// row's value, whatever the client has buffered.
			c.m.conflicts.WithLabelValues(c.cfg.Group, k.topic, strconv.Itoa(int(k.partition))).Inc()
			fresh, rerr := c.reload(ctx, k)
			if rerr != nil {
				return 0, false // ctx ended; the next owner reads the row
			}
			log.Warn("checkpoint moved by another member; batch rolled back, re-seeking",
				"expected_next_offset", cp.next, "exists", cp.exists, "row_next_offset", fresh.next, "row_exists", fresh.exists)
			// No row (deleted by an operator to reset): offset 0, which the
			// client moves up to the log start if the log begins later.
			return fresh.next, true
		case ctx.Err() != nil:
			log.Info("batch abandoned on shutdown", "first_offset", recs[0].Offset, "records", len(recs))
			return 0, false
		default:
			c.m.retries.WithLabelValues(c.cfg.Group, k.topic, retryBatch).Inc()
			d := c.cfg.Retry.backoff(n)
			log.Error("batch failed on infrastructure; retrying", "first_offset", recs[0].Offset,
				"records", len(recs), "try", n, "backoff", d, "err", err)
			if sleep(ctx, d) != nil {
				log.Info("batch abandoned on shutdown", "first_offset", recs[0].Offset, "records", len(recs))
				return 0, false
			}
		}
	}
}

// reload reads the partition's checkpoint row into what this member knows,
// retrying database errors until ctx ends.
func (c *Consumer) reload(ctx context.Context, k tp) (checkpoint, error) {
	for n := 1; ; n++ {
		got, err := loadCheckpoints(ctx, c.cfg.Pool, c.cfg.Group, k.topic, []int32{k.partition})
		if err == nil {
			cp := checkpoint{}
			if v, ok := got[k.partition]; ok {
				cp = checkpoint{next: v, exists: true}
			}
			c.setKnown(k, cp)
			return cp, nil
		}
		if ctx.Err() != nil {
			return checkpoint{}, ctx.Err()
		}
		c.log.Error("reload checkpoint", "topic", k.topic, "partition", k.partition, "err", err)
		if err := sleep(ctx, c.cfg.Retry.backoff(n)); err != nil {
			return checkpoint{}, err
		}
	}
}

// asyncBegin begins a transaction that commits without waiting for its WAL
// flush (Config.AsyncCommit).
const asyncBegin = "BEGIN; SET LOCAL synchronous_commit = off"

// tryBatch runs the batch once in one transaction. On the fast path every
// record is handled directly in the transaction; the first record error
// rolls everything back and returns errRecordFailed. On the slow path each
// record runs in a savepoint, failing records are retried and eventually
// dead-lettered, and the rest of the batch stands. Any other error is an
// infrastructure error or errConflict; the transaction is rolled back.
func (c *Consumer) tryBatch(ctx context.Context, cl *kgo.Client, k tp, base checkpoint, next int64, recs []*kgo.Record, st *batchState) (err error) {
	var opts pgx.TxOptions
	if c.cfg.AsyncCommit {
		opts.BeginQuery = asyncBegin // one round trip: simple protocol
	}
	tx, err := c.cfg.Pool.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if fh, ok := c.h.(FinishHook); ok {
		defer func() { fh.Finished(tx, err == nil) }() // runs after the rollback below
	}
	defer func() {
		if err != nil {
			// Rolling back a broken or aborted transaction can itself fail;
			// the batch is retried either way, and a lost connection rolls
			// back on the server.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = tx.Rollback(rctx)
		}
	}()

	bh, batched := c.h.(BatchHandler)
	batched = batched && !st.slow
	if batched {
		// The whole batch in one call; a record's failure falls back to
		// the savepoint path, which finds and dead-letters it.
		start := time.Now()
		herr := bh.HandleBatch(ctx, tx, recs)
		c.m.handleSeconds.WithLabelValues(c.cfg.Group, k.topic).Observe(time.Since(start).Seconds())
		if herr != nil {
			if isInfra(herr) {
				return fmt.Errorf("handle batch %s/%d@%d: %w", k.topic, k.partition, recs[0].Offset, herr)
			}
			c.log.Debug("batch failed on the fast path", "topic", k.topic, "partition", k.partition, "first_offset", recs[0].Offset, "err", herr)
			return errRecordFailed
		}
	}
	for i, r := range recs {
		if batched {
			break // applied above
		}
		if st.dead[i] {
			continue // in the dead-letter topic already; nothing to apply
		}
		if !st.slow {
			if herr := c.handle(ctx, tx, r); herr != nil {
				if isInfra(herr) {
					return fmt.Errorf("handle %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, herr)
				}
				st.attempts[i]++
				st.lastErr[i] = herr
				c.log.Debug("record failed on the fast path", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", herr)
				return errRecordFailed
			}
			continue
		}
		if err := c.handleIsolated(ctx, cl, tx, i, r, st); err != nil {
			return err
		}
	}

	if c.beforeCommit != nil {
		if err := c.beforeCommit(ctx, tx, k.topic, k.partition, recs); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := casCheckpoint(ctx, tx, c.cfg.Group, k.topic, k.partition, base, next); err != nil {
		return err
	}
	// Once the batch is applied, finish its commit even if shutdown began:
	// a commit cut short by our own cancellation may still land on the
	// server, and this member would not know it had moved the checkpoint.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := tx.Commit(cctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	c.m.commitSeconds.WithLabelValues(c.cfg.Group).Observe(time.Since(start).Seconds())
	return nil
}

// handleIsolated handles record i in a savepoint until it succeeds, or
// dead-letters it once its attempts are spent (or its error is Permanent).
// It returns only infrastructure errors.
func (c *Consumer) handleIsolated(ctx context.Context, cl *kgo.Client, tx pgx.Tx, i int, r *kgo.Record, st *batchState) error {
	for {
		if st.attempts[i] >= c.cfg.Retry.MaxAttempts || IsPermanent(st.lastErr[i]) {
			if err := c.deadLetter(ctx, cl, r, st.lastErr[i], st.attempts[i]); err != nil {
				return fmt.Errorf("dead-letter %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
			}
			st.dead[i] = true
			return nil
		}
		if st.attempts[i] > 0 {
			c.m.retries.WithLabelValues(c.cfg.Group, r.Topic, retryRecord).Inc()
			if err := sleep(ctx, c.cfg.Retry.backoff(st.attempts[i])); err != nil {
				return err
			}
		}
		sp, err := tx.Begin(ctx) // SAVEPOINT
		if err != nil {
			return fmt.Errorf("savepoint: %w", err)
		}
		herr := c.handle(ctx, sp, r)
		if herr == nil {
			if err := sp.Commit(ctx); err != nil { // RELEASE SAVEPOINT
				return fmt.Errorf("release savepoint: %w", err)
			}
			return nil
		}
		if err := sp.Rollback(ctx); err != nil { // ROLLBACK TO SAVEPOINT
			return fmt.Errorf("rollback to savepoint after %v: %w", herr, err)
		}
		if isInfra(herr) {
			return fmt.Errorf("handle %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, herr)
		}
		st.attempts[i]++
		st.lastErr[i] = herr
		c.log.Warn("record failed", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset,
			"attempt", st.attempts[i], "max_attempts", c.cfg.Retry.MaxAttempts, "err", herr)
	}
}

func (c *Consumer) handle(ctx context.Context, tx pgx.Tx, r *kgo.Record) error {
	start := time.Now()
	err := c.h.Handle(ctx, tx, r)
	c.m.handleSeconds.WithLabelValues(c.cfg.Group, r.Topic).Observe(time.Since(start).Seconds())
	return err
}
