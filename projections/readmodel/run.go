package readmodel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/consume"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Topics are the Kafka topics a projection's live builder consumes, named
// by topicOf (nil: topics.Events).
func Topics(p Projection, topicOf func(context string) string) []string {
	if topicOf == nil {
		topicOf = topics.Events
	}
	out := make([]string, len(p.Sources()))
	for i, s := range p.Sources() {
		out[i] = topicOf(s)
	}
	return out
}

// RunConfig configures RunBuilders.
type RunConfig struct {
	Brokers    []string
	Pool       *pgxpool.Pool // the projections database
	Registry   *codec.Registry
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	KafkaOpts  []kgo.Opt
	// Retry overrides the consumer runtime's retry policy (tests).
	Retry consume.RetryPolicy
	// TopicOf names a context's events topic (default topics.Events).
	TopicOf func(context string) string
	// GroupOf names a projection's consumer group (default Group).
	GroupOf func(projection string) string
	// InstanceID makes every builder a static member of its group (ids
	// are per group, so one id serves them all): a restarted process
	// takes its partitions back at once. Empty: dynamic members.
	InstanceID string
}

// RunBuilders runs the live builder of every projection, each its own
// consumer group, until ctx ends or one fails.
func RunBuilders(ctx context.Context, cfg RunConfig, ps ...Projection) error {
	if cfg.Registry == nil {
		cfg.Registry = codec.All()
	}
	if cfg.GroupOf == nil {
		cfg.GroupOf = Group
	}
	if err := Migrate(ctx, cfg.Pool); err != nil {
		return err
	}
	if err := consume.Migrate(ctx, cfg.Pool); err != nil {
		return err
	}
	var consumers []*consume.Consumer
	for _, p := range ps {
		if _, err := EnsureActive(ctx, cfg.Pool, p); err != nil {
			return err
		}
		c, err := consume.New(consume.Config{
			Brokers:    cfg.Brokers,
			Group:      cfg.GroupOf(p.Name()),
			Topics:     Topics(p, cfg.TopicOf),
			Pool:       cfg.Pool,
			Logger:     cfg.Logger,
			Registerer: cfg.Registerer,
			KafkaOpts:  cfg.KafkaOpts,
			Retry:      cfg.Retry,
			InstanceID: cfg.InstanceID,
			// A read model is derived: a batch lost to a crash is lost with
			// its checkpoint and consumed again.
			AsyncCommit: true,
		}, NewBuilder(p, cfg.Registry, cfg.TopicOf))
		if err != nil {
			return fmt.Errorf("readmodel: builder %s: %w", p.Name(), err)
		}
		consumers = append(consumers, c)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(consumers))
	for _, c := range consumers {
		go func() {
			err := c.Run(ctx)
			cancel() // one stopped: stop the others
			errs <- err
		}()
	}
	var first error
	for range consumers {
		if err := <-errs; err != nil && first == nil && !errors.Is(err, context.Canceled) {
			first = err
		}
	}
	return first
}
