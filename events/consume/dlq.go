package consume

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	kafkatopics "github.com/keel-commerce/keel/events/topics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Headers the runtime adds to a dead-lettered record, next to the
// original record's headers (kept as they were).
const (
	HeaderDLQOriginTopic     = "dlq-origin-topic"     // topic the record came from
	HeaderDLQOriginPartition = "dlq-origin-partition" // its partition, decimal
	HeaderDLQOriginOffset    = "dlq-origin-offset"    // its offset, decimal
	HeaderDLQError           = "dlq-error"            // the last handler error
	HeaderDLQAttempts        = "dlq-attempts"         // how many times it was handled, decimal
	HeaderDLQTime            = "dlq-time"             // when it was dead-lettered, RFC 3339 UTC
	HeaderDLQGroup           = "dlq-group"            // the consumer group that gave up on it
)

// maxDLQErrorLen bounds the dlq-error header, so a huge error message
// cannot make the dead letter too large to produce.
const maxDLQErrorLen = 4096

// dlqProduceTimeout bounds one dead-letter produce attempt; the runtime
// retries after it.
const dlqProduceTimeout = 30 * time.Second

// dlqRecord builds the dead letter of r: same key and value, original
// headers plus the dlq-* headers.
func dlqRecord(r *kgo.Record, topic, group string, cause error, attempts int, now time.Time) *kgo.Record {
	msg := "unknown error"
	if cause != nil {
		msg = cause.Error()
	}
	if len(msg) > maxDLQErrorLen {
		msg = msg[:maxDLQErrorLen]
	}
	h := make([]kgo.RecordHeader, 0, len(r.Headers)+7)
	h = append(h, r.Headers...)
	add := func(k, v string) { h = append(h, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
	add(HeaderDLQOriginTopic, r.Topic)
	add(HeaderDLQOriginPartition, strconv.FormatInt(int64(r.Partition), 10))
	add(HeaderDLQOriginOffset, strconv.FormatInt(r.Offset, 10))
	add(HeaderDLQError, msg)
	add(HeaderDLQAttempts, strconv.Itoa(attempts))
	add(HeaderDLQTime, now.UTC().Format(time.RFC3339))
	add(HeaderDLQGroup, group)
	return &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Headers: h}
}

// deadLetter produces the dead letter of r synchronously (acks from all
// in-sync replicas, the client's default) and returns once it is durably in
// the dead-letter topic. A failed produce is retried with backoff until it
// succeeds or ctx ends: the caller commits the checkpoint past r only after
// this returns nil, so a dead-letter topic that is down holds the partition
// up rather than losing the record.
func (c *Consumer) deadLetter(ctx context.Context, cl *kgo.Client, r *kgo.Record, cause error, attempts int) error {
	topic := r.Topic + c.cfg.DLQSuffix
	for n := 1; ; n++ {
		// A fresh record each try: the client writes into the ones it produces.
		rec := dlqRecord(r, topic, c.cfg.Group, cause, attempts, time.Now())
		pctx, cancel := context.WithTimeout(ctx, dlqProduceTimeout)
		err := cl.ProduceSync(pctx, rec).FirstErr()
		cancel()
		if err == nil {
			c.m.deadLetters.WithLabelValues(c.cfg.Group, r.Topic).Inc()
			c.log.Warn("record dead-lettered", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset,
				"dlq", topic, "dlq_partition", rec.Partition, "dlq_offset", rec.Offset, "attempts", attempts, "err", cause)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.m.retries.WithLabelValues(c.cfg.Group, r.Topic, retryDLQ).Inc()
		c.log.Error("dead-letter produce failed, retrying", "topic", r.Topic, "partition", r.Partition,
			"offset", r.Offset, "dlq", topic, "try", n, "err", err)
		if err := sleep(ctx, c.cfg.Retry.backoff(n)); err != nil {
			return err
		}
	}
}

// EnsureDLQTopics creates topic+suffix for each topic, with the given
// partitions and the broker's default replication factor, and succeeds if
// they already exist. The topic tooling or deployment may create them
// instead; the runtime only checks that they exist.
func EnsureDLQTopics(ctx context.Context, adm *kadm.Client, suffix string, partitions int32, topics ...string) error {
	if suffix == "" {
		suffix = DefaultDLQSuffix
	}
	names := make([]string, len(topics))
	for i, t := range topics {
		names[i] = t + suffix
	}
	resp, err := adm.CreateTopics(ctx, partitions, -1, nil, names...)
	if err != nil {
		return fmt.Errorf("consume: create dead-letter topics %v: %w", names, err)
	}
	var errs []error
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("%s: %w", r.Topic, r.Err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("consume: create dead-letter topics: %w", err)
	}
	return kafkatopics.WaitReady(ctx, adm, names...)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
