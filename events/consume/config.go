package consume

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultDLQSuffix               = ".dlq"
	DefaultMaxAttempts             = 5
	DefaultInitialBackoff          = 100 * time.Millisecond
	DefaultMaxBackoff              = 5 * time.Second
	DefaultMaxPollRecords          = 500
	DefaultMaxConcurrentPartitions = 8
)

// RetryPolicy bounds how often a failing record is tried before it is
// dead-lettered, and paces every retry (records, batches after an
// infrastructure error, dead-letter produces) with exponential backoff and
// jitter. The zero value means the defaults.
type RetryPolicy struct {
	// MaxAttempts is how many times a record is handled before it is
	// dead-lettered (default 5). A Permanent error skips the rest.
	MaxAttempts int
	// InitialBackoff is the wait before the first retry (default 100ms);
	// each further retry doubles it, up to MaxBackoff (default 5s). The
	// actual wait is drawn uniformly from [d/2, d].
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

// backoff returns the wait before retry n (n ≥ 1).
func (p RetryPolicy) backoff(n int) time.Duration {
	d := p.MaxBackoff
	if n < 1 {
		n = 1
	}
	if n <= 30 {
		if x := p.InitialBackoff << (n - 1); x > 0 && x < d {
			d = x
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Config configures a Consumer. Build one in main from the environment;
// New applies the defaults to zero fields and validates it.
type Config struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string
	// Group is the Kafka consumer group and the key of the checkpoint rows.
	// Renaming it restarts the consumer from the beginning of every topic.
	Group string
	// Topics are consumed; they and their dead-letter topics must exist
	// (the broker does not auto-create topics; see EnsureDLQTopics).
	Topics []string
	// DLQSuffix names the dead-letter topic of a topic: topic+DLQSuffix
	// (default ".dlq").
	DLQSuffix string
	// Retry is the retry policy (zero fields take the defaults).
	Retry RetryPolicy
	// MaxPollRecords bounds the records of one poll across all partitions
	// (default 500): a poll's batches are processed while rebalances wait,
	// so this bounds how long a rebalance can be held up.
	MaxPollRecords int
	// MaxConcurrentPartitions bounds how many partition batches of one poll
	// are processed at once, each in its own transaction (default 8).
	MaxConcurrentPartitions int
	// MaxBatchRecords, when set, splits a partition's records of a poll
	// into transactions of at most this many, committed one after the
	// other (default 0: one transaction for all of them). A long
	// transaction that writes to an event store holds back the store's
	// readers (its relay) until it commits; bounding it bounds that wait.
	MaxBatchRecords int
	// Pool is the database of the handler's tables and of the checkpoints.
	Pool *pgxpool.Pool
	// AsyncCommit commits each batch without waiting for its WAL flush
	// (synchronous_commit = off for the batch's transaction). Only for
	// handlers whose effects are derived data, such as read models: a
	// crash of PostgreSQL can lose the last moments of work, but always
	// together with the checkpoint that covers it (one transaction), so the
	// records are consumed again and nothing is lost. It takes the fsync
	// off the batch's commit, and with it off PostgreSQL's server-wide
	// NOTIFY lock when the handler notifies in its transaction.
	AsyncCommit bool
	// Logger receives operational logs (default: discarded).
	Logger *slog.Logger
	// Registerer receives the metrics (default: none registered). Several
	// consumers may share one; their series differ by the group label.
	Registerer prometheus.Registerer
	// InstanceID, when set, makes the member a static member of the group
	// (KIP-345, group.instance.id): a process restarted under the same id
	// (after a crash, say) takes its partitions back at once, instead of
	// waiting out the dead member's session timeout and a rebalance. Give
	// every running replica its own id; "" is a dynamic member.
	InstanceID string
	// KafkaOpts are appended to the runtime's kgo options, e.g. for tests
	// (shorter heartbeats) or TLS/SASL. Options that change the runtime's
	// semantics (auto-commit, consumer group, offsets) must not be passed.
	KafkaOpts []kgo.Opt
}

func (c *Config) setDefaults() {
	if c.DLQSuffix == "" {
		c.DLQSuffix = DefaultDLQSuffix
	}
	if c.Retry.MaxAttempts == 0 {
		c.Retry.MaxAttempts = DefaultMaxAttempts
	}
	if c.Retry.InitialBackoff == 0 {
		c.Retry.InitialBackoff = DefaultInitialBackoff
	}
	if c.Retry.MaxBackoff == 0 {
		c.Retry.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxPollRecords == 0 {
		c.MaxPollRecords = DefaultMaxPollRecords
	}
	if c.MaxConcurrentPartitions == 0 {
		c.MaxConcurrentPartitions = DefaultMaxConcurrentPartitions
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem with c, assuming zero optional fields
// take their defaults.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("no brokers"))
	}
	if strings.TrimSpace(c.Group) == "" {
		errs = append(errs, errors.New("no group"))
	}
	if len(c.Topics) == 0 {
		errs = append(errs, errors.New("no topics"))
	}
	seen := map[string]bool{}
	for _, t := range c.Topics {
		if t == "" {
			errs = append(errs, errors.New("empty topic name"))
		}
		if seen[t] {
			errs = append(errs, fmt.Errorf("topic %q listed twice", t))
		}
		seen[t] = true
	}
	if c.Pool == nil {
		errs = append(errs, errors.New("no database pool"))
	}
	if c.Retry.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("retry max attempts %d < 1", c.Retry.MaxAttempts))
	}
	if c.Retry.InitialBackoff < 0 || c.Retry.MaxBackoff < 0 {
		errs = append(errs, errors.New("negative backoff"))
	}
	if c.Retry.InitialBackoff > 0 && c.Retry.MaxBackoff > 0 && c.Retry.InitialBackoff > c.Retry.MaxBackoff {
		errs = append(errs, fmt.Errorf("initial backoff %s > max backoff %s", c.Retry.InitialBackoff, c.Retry.MaxBackoff))
	}
	if c.MaxPollRecords < 0 {
		errs = append(errs, fmt.Errorf("max poll records %d < 1", c.MaxPollRecords))
	}
	if c.MaxConcurrentPartitions < 0 {
		errs = append(errs, fmt.Errorf("max concurrent partitions %d < 1", c.MaxConcurrentPartitions))
	}
	if c.MaxBatchRecords < 0 {
		errs = append(errs, fmt.Errorf("max batch records %d < 0", c.MaxBatchRecords))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("consume: invalid config: %w", err)
	}
	return nil
}

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // the embedded directory is fixed at build time
	}
	return sub
}
