package readmodel

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/store/pg"
	"github.com/keel-commerce/keel/events/topics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// StatusOptions configure Status.
type StatusOptions struct {
	// Pool is the projections database: the copies and the live builders'
	// checkpoints (consumer_checkpoints).
	Pool *pgxpool.Pool
	// Projections are the projections this process knows. Their sources
	// name the builders' topics even before a builder has checkpointed
	// anything; a projection here without a copy is listed without one.
	// Copies of projections not listed here are shown too, with the lag
	// over the topics their builder has checkpoints for.
	Projections []Projection
	// Brokers are the Kafka brokers, for the lag (none: no lag).
	Brokers   []string
	KafkaOpts []kgo.Opt
	// Stores are the source event stores by context, for the total of a
	// copy being built (without a source's store the total is unknown).
	Stores map[string]*pg.Store
	// TopicOf names a context's events topic (default topics.Events).
	TopicOf func(context string) string
	// GroupOf names a projection's consumer group (default Group).
	GroupOf func(projection string) string
	// FetchTimeout bounds the reads of the oldest unapplied records
	// (default 10 s); a partition not read by then has an unknown age.
	FetchTimeout time.Duration
	// Now is the clock for ages (default time.Now).
	Now func() time.Time
}

// Status is where one projection stands.
type Status struct {
	Projection string
	// Known is whether the projection is in StatusOptions.Projections.
	Known bool
	// Active is the copy queries read and the live builder writes (nil:
	// none yet).
	Active *Generation
	// Building is a copy a rebuild is filling (nil: none).
	Building *Building
	// Group is the live builder's consumer group.
	Group string
	// Lag is how far the live builder is behind its topics (nil: no
	// brokers given).
	Lag *Lag
}

// Building is a copy being rebuilt and how far it has read.
type Building struct {
	Generation
	// Total is EventsRead plus the events the source stores hold after the
	// copy's positions: what it will have read at the end, were nothing
	// appended meanwhile. -1 when a source store was not given.
	Total int64
}

// Lag is a live builder's distance from the end of its topics.
//
// Events counts offsets between the builder's checkpoint and the end a
// read-committed consumer can reach (the last stable offset): Kafka
// transaction markers take offsets too, and aborted records are never
// delivered, so it is an upper bound on the events left to apply (the relay
// publishes in transactions: a caught-up builder may show a few).
type Lag struct {
	Events int64
	// Oldest is the record time of the oldest record not yet applied
	// (zero: none, caught up).
	Oldest time.Time
	// Seconds is the age of Oldest at the time of the status (0: caught
	// up).
	Seconds float64
	// Unknown says some lagging partition's oldest record could not be
	// read in time: Oldest and Seconds cover the others.
	Unknown    bool
	Partitions []PartitionLag
	// MissingTopics are source topics the broker does not have (yet).
	MissingTopics []string
}

// PartitionLag is the lag of one partition of a source topic.
type PartitionLag struct {
	Topic     string
	Partition int32
	// Next is the checkpoint: the offset of the next record to apply (the
	// log start when the builder has no checkpoint there yet).
	Next int64
	// Checkpointed is whether the builder has a checkpoint row here.
	Checkpointed bool
	// End is the partition's last stable offset.
	End    int64
	Events int64
	// Oldest is the record time of the first record at or after Next that
	// is not a transaction marker (zero: none, caught up).
	Oldest time.Time
	// Unknown: that record could not be read within FetchTimeout.
	Unknown bool
}

// TopicLag sums a lag's partitions per topic, in topic order.
func (l *Lag) TopicLag() []PartitionLag {
	byTopic := map[string]*PartitionLag{}
	var names []string
	for _, p := range l.Partitions {
		t := byTopic[p.Topic]
		if t == nil {
			t = &PartitionLag{Topic: p.Topic, Partition: -1}
			byTopic[p.Topic] = t
			names = append(names, p.Topic)
		}
		t.Next += p.Next
		t.End += p.End
		t.Events += p.Events
		t.Unknown = t.Unknown || p.Unknown
		if !p.Oldest.IsZero() && (t.Oldest.IsZero() || p.Oldest.Before(t.Oldest)) {
			t.Oldest = p.Oldest
		}
	}
	sort.Strings(names)
	out := make([]PartitionLag, len(names))
	for i, n := range names {
		out[i] = *byTopic[n]
	}
	return out
}

// Statuses returns the status of every projection that has a copy or is in
// o.Projections, by name.
func Statuses(ctx context.Context, o StatusOptions) ([]Status, error) {
	o.defaults()
	gens, err := generationsIfAny(ctx, o.Pool)
	if err != nil {
		return nil, fmt.Errorf("readmodel: status: %w", err)
	}
	byName := map[string]*Status{}
	get := func(name string) *Status {
		if s := byName[name]; s != nil {
			return s
		}
		s := &Status{Projection: name, Group: o.GroupOf(name)}
		byName[name] = s
		return s
	}
	known := map[string]Projection{}
	for _, p := range o.Projections {
		known[p.Name()] = p
		get(p.Name()).Known = true
	}
	for _, g := range gens {
		s := get(g.Projection)
		switch g.State {
		case "active":
			s.Active = &g
		case "building":
			s.Building = &Building{Generation: g, Total: -1}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)

	var k *kafkaLag
	if len(o.Brokers) > 0 {
		if k, err = newKafkaLag(o); err != nil {
			return nil, err
		}
		defer k.close()
	}
	out := make([]Status, 0, len(names))
	for _, n := range names {
		s := byName[n]
		p := known[n]
		if s.Building != nil && p != nil {
			if s.Building.Total, err = buildTotal(ctx, p, s.Building.Generation, o.Stores); err != nil {
				return nil, fmt.Errorf("readmodel: status of %s: %w", n, err)
			}
		}
		if k != nil {
			var want []string
			if p != nil {
				for _, src := range p.Sources() {
					want = append(want, o.TopicOf(src))
				}
			}
			if s.Lag, err = k.lag(ctx, s.Group, want); err != nil {
				return nil, fmt.Errorf("readmodel: lag of %s: %w", n, err)
			}
		}
		out = append(out, *s)
	}
	return out, nil
}

func (o *StatusOptions) defaults() {
	if o.TopicOf == nil {
		o.TopicOf = topics.Events
	}
	if o.GroupOf == nil {
		o.GroupOf = Group
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// generationsIfAny is Generations, or none where no builder or rebuild
// has ever created the table.
func generationsIfAny(ctx context.Context, q *pgxpool.Pool) ([]Generation, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('readmodel_generations') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	return Generations(ctx, q)
}

// buildTotal is what copy g will have read once it reaches the stores'
// current heads, or -1 without every source's store.
func buildTotal(ctx context.Context, p Projection, g Generation, stores map[string]*pg.Store) (int64, error) {
	total := g.EventsRead
	for _, src := range p.Sources() {
		st := stores[src]
		if st == nil {
			return -1, nil
		}
		var after envelope.Position
		if s, ok := g.Positions[src]; ok {
			var err error
			if after, err = envelope.ParsePosition(s); err != nil {
				return 0, fmt.Errorf("copy %s: position of %s: %w", g.Schema, src, err)
			}
		}
		n, err := countAfter(ctx, st, after)
		if err != nil {
			return 0, fmt.Errorf("count %s events: %w", src, err)
		}
		total += n
	}
	return total, nil
}

// kafkaLag measures consumer groups' lag from their checkpoints.
type kafkaLag struct {
	o   StatusOptions
	cl  *kgo.Client
	adm *kadm.Client
}

func newKafkaLag(o StatusOptions) (*kafkaLag, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(o.Brokers...)}, o.KafkaOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("readmodel: kafka %v: %w", o.Brokers, err)
	}
	return &kafkaLag{o: o, cl: cl, adm: kadm.NewClient(cl)}, nil
}

func (k *kafkaLag) close() { k.cl.Close() }

// lag is group's lag on the topics in want and the topics it has
// checkpoints for.
func (k *kafkaLag) lag(ctx context.Context, group string, want []string) (*Lag, error) {
	cps, err := checkpointsIfAny(ctx, k.o.Pool, group)
	if err != nil {
		return nil, err
	}
	ts := slices.Clone(want)
	for t := range cps {
		if !slices.Contains(ts, t) {
			ts = append(ts, t)
		}
	}
	lag := &Lag{}
	if len(ts) == 0 {
		return lag, nil
	}
	sort.Strings(ts)
	starts, err := k.adm.ListStartOffsets(ctx, ts...)
	if err == nil {
		err = listError(starts, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("start offsets of %v: %w", ts, err)
	}
	ends, err := k.adm.ListCommittedOffsets(ctx, ts...)
	if err == nil {
		err = listError(ends, &lag.MissingTopics)
	}
	if err != nil {
		return nil, fmt.Errorf("end offsets of %v: %w", ts, err)
	}
	ends.Each(func(e kadm.ListedOffset) {
		if e.Err != nil {
			return // a missing topic
		}
		p := PartitionLag{Topic: e.Topic, Partition: e.Partition, End: e.Offset}
		p.Next, p.Checkpointed = cps[e.Topic][e.Partition]
		if s, ok := starts.Lookup(e.Topic, e.Partition); ok && s.Offset > p.Next {
			p.Next = s.Offset // before the log start: the builder resumes there
		}
		p.Events = max(p.End-p.Next, 0)
		lag.Partitions = append(lag.Partitions, p)
	})
	sort.Slice(lag.Partitions, func(i, j int) bool {
		a, b := lag.Partitions[i], lag.Partitions[j]
		return a.Topic < b.Topic || a.Topic == b.Topic && a.Partition < b.Partition
	})
	if err := k.oldest(ctx, lag.Partitions); err != nil {
		return nil, err
	}
	now := k.o.Now()
	for _, p := range lag.Partitions {
		lag.Events += p.Events
		lag.Unknown = lag.Unknown || p.Unknown
		if !p.Oldest.IsZero() && (lag.Oldest.IsZero() || p.Oldest.Before(lag.Oldest)) {
			lag.Oldest = p.Oldest
		}
	}
	if !lag.Oldest.IsZero() {
		lag.Seconds = max(now.Sub(lag.Oldest).Seconds(), 0)
	}
	return lag, nil
}

// listError is the first error of a listing other than an unknown topic;
// unknown topics are added to missing (if given).
func listError(l kadm.ListedOffsets, missing *[]string) error {
	var first error
	l.Each(func(o kadm.ListedOffset) {
		switch {
		case o.Err == nil:
		case errors.Is(o.Err, kerr.UnknownTopicOrPartition):
			if missing != nil && !slices.Contains(*missing, o.Topic) {
				*missing = append(*missing, o.Topic)
			}
		case first == nil:
			first = fmt.Errorf("%s/%d: %w", o.Topic, o.Partition, o.Err)
		}
	})
	return first
}

// checkpointsIfAny reads group's checkpoints: topic → partition → next
// offset (none where no consumer ever ran in this database).
func checkpointsIfAny(ctx context.Context, q *pgxpool.Pool, group string) (map[string]map[int32]int64, error) {
	out := map[string]map[int32]int64{}
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('consumer_checkpoints') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return out, err
	}
	rows, err := q.Query(ctx, `SELECT topic, partition, next_offset FROM consumer_checkpoints WHERE group_id = $1`, group)
	if err != nil {
		return nil, fmt.Errorf("checkpoints of %s: %w", group, err)
	}
	defer rows.Close()
	for rows.Next() {
		var t string
		var p int32
		var n int64
		if err := rows.Scan(&t, &p, &n); err != nil {
			return nil, err
		}
		if out[t] == nil {
			out[t] = map[int32]int64{}
		}
		out[t][p] = n
	}
	return out, rows.Err()
}

// oldest fills in the record time of the first unapplied record of every
// lagging partition. It reads from each checkpoint with transaction markers
// kept, so a partition whose only records left are markers is seen to be
// caught up at once instead of waiting for a record that never comes.
func (k *kafkaLag) oldest(ctx context.Context, ps []PartitionLag) error {
	pending := map[string]map[int32]int{} // topic → partition → index in ps
	assign := map[string]map[int32]kgo.Offset{}
	for i, p := range ps {
		if p.Events == 0 {
			continue
		}
		if pending[p.Topic] == nil {
			pending[p.Topic] = map[int32]int{}
			assign[p.Topic] = map[int32]kgo.Offset{}
		}
		pending[p.Topic][p.Partition] = i
		assign[p.Topic][p.Partition] = kgo.NewOffset().At(p.Next)
	}
	if len(pending) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(k.o.Brokers...)}, append(slices.Clone(k.o.KafkaOpts),
		kgo.ConsumePartitions(assign), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords(),
		kgo.FetchMaxWait(100*time.Millisecond))...)...)
	if err != nil {
		return fmt.Errorf("kafka %v: %w", k.o.Brokers, err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, k.o.FetchTimeout)
	defer cancel()
	left := 0
	for _, m := range pending {
		left += len(m)
	}
	done := func(topic string, part int32) {
		delete(pending[topic], part)
		left--
	}
	for left > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && ferr == nil {
				ferr = fmt.Errorf("read %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			i, ok := pending[r.Topic][r.Partition]
			if !ok || r.Offset < ps[i].Next {
				return
			}
			switch {
			case !r.Attrs.IsControl() && r.Offset < ps[i].End:
				ps[i].Oldest = r.Timestamp
				done(r.Topic, r.Partition)
			case r.Offset >= ps[i].End-1:
				done(r.Topic, r.Partition) // only markers left before the end: caught up
			}
		})
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err // the caller's ctx ended
	}
	for _, m := range pending {
		for _, i := range m {
			ps[i].Unknown = true
		}
	}
	return nil
}
