package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/consume"
	"github.com/keel-commerce/keel/events/consume/dlqstate"
	"github.com/keel-commerce/keel/events/wire"
)

// Dead-letter state lives in events/consume/dlqstate (table
// keelctl_dlq_actions in keel_projections). A redrive produces before it
// commits its row: a crash between the two can repeat the redrive (at least
// once, like every Keel topic; consumers dedupe by ce_id), never lose it.

// dlqFlags are the flags every dlq command shares.
type dlqFlags struct {
	json     *bool
	stateURL *string
}

func addDLQFlags(fs *flag.FlagSet) dlqFlags {
	return dlqFlags{
		json:     fs.Bool("json", false, "JSON lines"),
		stateURL: fs.String("state-database-url", "", "database of the dead-letter state (default: KEEL_PG_URL with database keel_projections)"),
	}
}

// stateStore is the dead-letter state with the pool keelctl opened for it.
type stateStore struct {
	pool *pgxpool.Pool
	*dlqstate.Store
}

func openState(ctx context.Context, e *env, explicit string) (*stateStore, error) {
	dsn, err := e.databaseURL(explicit, "keel_projections")
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("dead-letter state database %s: %w", redact(dsn), err)
	}
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	st, err := dlqstate.Open(sctx, pool)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("dead-letter state database %s: %w", redact(dsn), err)
	}
	return &stateStore{pool: pool, Store: st}, nil
}

func (s *stateStore) close() { s.pool.Close() }

// all returns every recorded action on topic, by partition and offset.
func (s *stateStore) all(ctx context.Context, topic string) (map[partOff]dlqstate.Action, error) {
	as, err := s.All(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(map[partOff]dlqstate.Action, len(as))
	for _, a := range as {
		out[partOff{a.Partition, a.Offset}] = a
	}
	return out, nil
}

// previous returns why dead letter r may not be acted on again: its own
// row, or (for a redrive) another dead letter of the same event already
// redriven.
func previous(ctx context.Context, tx *dlqstate.Tx, r *kgo.Record, redrive bool) (string, error) {
	a, ok, err := tx.At(ctx, r.Partition, r.Offset)
	if err != nil {
		return "", err
	}
	if ok {
		return fmt.Sprintf("%d:%d was already %s at %s by %s%s", a.Partition, a.Offset, a.Action,
			a.At.UTC().Format(time.RFC3339), orDash(a.Actor), reasonSuffix(a.Reason)), nil
	}
	ceID := header(r, wire.HeaderID)
	if !redrive || ceID == "" {
		return "", nil
	}
	a, ok, err = tx.LastRedrive(ctx, ceID)
	if err != nil || !ok {
		return "", err
	}
	return fmt.Sprintf("event %s was already redriven from %d:%d at %s", ceID, a.Partition, a.Offset,
		a.At.UTC().Format(time.RFC3339)), nil
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return " (" + r + ")"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// record stores act on dead letter r; target is where a redrive landed.
func record(ctx context.Context, tx *dlqstate.Tx, r *kgo.Record, act, reason string, target *kgo.Record) error {
	a := dlqstate.Action{Partition: r.Partition, Offset: r.Offset, CEID: header(r, wire.HeaderID), Action: act,
		Reason: reason, OriginTopic: header(r, consume.HeaderDLQOriginTopic), Actor: actor()}
	if target != nil {
		a.TargetPartition, a.TargetOffset = &target.Partition, &target.Offset
	}
	return tx.Record(ctx, a)
}

func actor() string {
	u := os.Getenv("USER")
	h, _ := os.Hostname()
	switch {
	case u != "" && h != "":
		return u + "@" + h
	case u != "":
		return u
	}
	return h
}

// partOff names one record of a topic.
type partOff struct {
	p int32
	o int64
}

func (x partOff) String() string { return fmt.Sprintf("%d:%d", x.p, x.o) }

// parseOffset reads "[PARTITION:]OFFSET"; without a partition the topic
// must have exactly one.
func parseOffset(s string, partitions int) (partOff, error) {
	ps, os_, found := strings.Cut(s, ":")
	if !found {
		ps, os_ = "", s
	}
	o, err := strconv.ParseInt(os_, 10, 64)
	if err != nil || o < 0 {
		return partOff{}, fmt.Errorf("%w: bad offset %q: want OFFSET or PARTITION:OFFSET, e.g. 12 or 3:12", errUsage, s)
	}
	if !found {
		if partitions != 1 {
			return partOff{}, fmt.Errorf("%w: offset %q: the topic has %d partitions, give PARTITION:OFFSET (see dlq list)", errUsage, s, partitions)
		}
		return partOff{0, o}, nil
	}
	p, err := strconv.ParseInt(ps, 10, 32)
	if err != nil || p < 0 {
		return partOff{}, fmt.Errorf("%w: bad partition in %q", errUsage, s)
	}
	return partOff{int32(p), o}, nil
}

// kafka is a broker connection for one command.
type kafka struct {
	brokers []string
	cl      *kgo.Client
	adm     *kadm.Client
}

func openKafka(e *env) (*kafka, error) {
	b := e.brokers()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b...), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0), kgo.RecordDeliveryTimeout(30*time.Second))
	if err != nil {
		return nil, fmt.Errorf("kafka %v: %w", b, err)
	}
	return &kafka{brokers: b, cl: cl, adm: kadm.NewClient(cl)}, nil
}

func (k *kafka) close() { k.cl.Close() }

// partitions returns topic's partition count, or errNotFound.
func (k *kafka) partitions(ctx context.Context, topic string) (int, error) {
	tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	details, err := k.adm.ListTopics(tctx, topic)
	if err != nil {
		return 0, fmt.Errorf("kafka %v: list topic %s: %w", k.brokers, topic, err)
	}
	d, ok := details[topic]
	if !ok || d.Err != nil || len(d.Partitions) == 0 {
		return 0, fmt.Errorf("%w: unknown topic %q on %v", errNotFound, topic, k.brokers)
	}
	return len(d.Partitions), nil
}

// bounds returns each partition's first and end offsets.
func (k *kafka) bounds(ctx context.Context, topic string) (map[int32][2]int64, error) {
	starts, err := k.adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("start offsets of %s: %w", topic, err)
	}
	ends, err := k.adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	out := map[int32][2]int64{}
	var errs []error
	starts.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			errs = append(errs, o.Err)
			return
		}
		b := out[o.Partition]
		b[0] = o.Offset
		out[o.Partition] = b
	})
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			errs = append(errs, o.Err)
			return
		}
		b := out[o.Partition]
		b[1] = o.Offset
		out[o.Partition] = b
	})
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("offsets of %s: %w", topic, err)
	}
	return out, nil
}

// read returns the records of topic: every one, or only the one at one.
func (k *kafka) read(ctx context.Context, topic string, one *partOff) ([]*kgo.Record, error) {
	bounds, err := k.bounds(ctx, topic)
	if err != nil {
		return nil, err
	}
	want := map[int32]kgo.Offset{}
	stopAt := map[int32]int64{} // read until offset ≥ this
	if one != nil {
		b, ok := bounds[one.p]
		if !ok {
			return nil, fmt.Errorf("%w: topic %s has no partition %d", errNotFound, topic, one.p)
		}
		if one.o < b[0] || one.o >= b[1] {
			return nil, fmt.Errorf("%w: no record at offset %s of %s: partition %d holds offsets [%d, %d)", errNotFound, one, topic, one.p, b[0], b[1])
		}
		want[one.p] = kgo.NewOffset().At(one.o)
		stopAt[one.p] = one.o
	} else {
		for p, b := range bounds {
			if b[1] > b[0] {
				want[p] = kgo.NewOffset().At(b[0])
				stopAt[p] = b[1] - 1
			}
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	rc, err := kgo.NewClient(kgo.SeedBrokers(k.brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: want}))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var out []*kgo.Record
	done := map[int32]bool{}
	// A partition can end in records this reader never sees (aborted
	// transactions, control records): give up on the rest after a quiet spell.
	deadline := time.Now().Add(30 * time.Second)
	for len(done) < len(want) {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		fs := rc.PollFetches(pctx)
		quiet := pctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if quiet {
			break
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return nil, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			if done[r.Partition] {
				return
			}
			if one == nil || r.Offset == one.o {
				out = append(out, r)
			}
			if r.Offset >= stopAt[r.Partition] {
				done[r.Partition] = true
			}
		})
		deadline = time.Now().Add(5 * time.Second)
	}
	if one != nil && len(out) == 0 {
		return nil, fmt.Errorf("%w: no record at offset %s of %s", errNotFound, one, topic)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Partition != out[j].Partition {
			return out[i].Partition < out[j].Partition
		}
		return out[i].Offset < out[j].Offset
	})
	return out, nil
}

func header(r *kgo.Record, k string) string {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == k {
			return string(r.Headers[i].Value)
		}
	}
	return ""
}

// originalHeaders are r's headers without the dead-letter ones.
func originalHeaders(r *kgo.Record) []kgo.RecordHeader {
	var h []kgo.RecordHeader
	for _, x := range r.Headers {
		if !strings.HasPrefix(x.Key, "dlq-") {
			h = append(h, kgo.RecordHeader{Key: x.Key, Value: append([]byte(nil), x.Value...)})
		}
	}
	return h
}

// letterJSON is one dead letter, for list and show.
type letterJSON struct {
	Partition       int32             `json:"partition"`
	Offset          int64             `json:"offset"`
	Key             string            `json:"key"`
	OriginTopic     string            `json:"origin_topic"`
	OriginPartition string            `json:"origin_partition"`
	OriginOffset    string            `json:"origin_offset"`
	Error           string            `json:"error"`
	Attempts        string            `json:"attempts"`
	Time            string            `json:"time"`
	Group           string            `json:"group"`
	CEType          string            `json:"ce_type"`
	CEID            string            `json:"ce_id"`
	State           string            `json:"state"`
	StateAt         string            `json:"state_at,omitempty"`
	StateReason     string            `json:"state_reason,omitempty"`
	Headers         map[string]string `json:"headers,omitempty"`
	Payload         json.RawMessage   `json:"payload,omitempty"`
	PayloadBase64   string            `json:"payload_base64,omitempty"`
	DecodeError     string            `json:"decode_error,omitempty"`
}

func letter(r *kgo.Record, state map[partOff]dlqstate.Action) letterJSON {
	l := letterJSON{
		Partition: r.Partition, Offset: r.Offset, Key: string(r.Key),
		OriginTopic:     header(r, consume.HeaderDLQOriginTopic),
		OriginPartition: header(r, consume.HeaderDLQOriginPartition),
		OriginOffset:    header(r, consume.HeaderDLQOriginOffset),
		Error:           header(r, consume.HeaderDLQError),
		Attempts:        header(r, consume.HeaderDLQAttempts),
		Time:            header(r, consume.HeaderDLQTime),
		Group:           header(r, consume.HeaderDLQGroup),
		CEType:          header(r, wire.HeaderType),
		CEID:            header(r, wire.HeaderID),
		State:           "pending",
	}
	if state == nil {
		l.State = "unknown"
	} else if a, ok := state[partOff{r.Partition, r.Offset}]; ok {
		l.State, l.StateAt, l.StateReason = a.Action, a.At.UTC().Format(time.RFC3339), a.Reason
	}
	return l
}

func dlqList(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("dlq list", flag.ContinueOnError)
	f := addDLQFlags(fs)
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	topic := pos[0]
	k, err := openKafka(e)
	if err != nil {
		return err
	}
	defer k.close()
	if _, err := k.partitions(ctx, topic); err != nil {
		return err
	}
	recs, err := k.read(ctx, topic, nil)
	if err != nil {
		return err
	}
	var state map[partOff]dlqstate.Action
	if st, err := openState(ctx, e, *f.stateURL); err != nil {
		fmt.Fprintf(e.errOut, "keelctl: warning: state column unknown: %v\n", err)
	} else {
		defer st.close()
		if state, err = st.all(ctx, topic); err != nil {
			return fmt.Errorf("dead-letter state: %w", err)
		}
	}
	if *f.json {
		for _, r := range recs {
			if err := jsonLine(e.out, letter(r, state)); err != nil {
				return err
			}
		}
		return nil
	}
	t := newTable(e.out, "PARTITION", "OFFSET", "ORIGIN", "ATTEMPTS", "DEAD-LETTERED", "CE_TYPE", "CE_ID", "STATE", "ERROR")
	for _, r := range recs {
		l := letter(r, state)
		t.row(strconv.Itoa(int(l.Partition)), strconv.FormatInt(l.Offset, 10),
			fmt.Sprintf("%s/%s@%s", l.OriginTopic, l.OriginPartition, l.OriginOffset),
			l.Attempts, l.Time, orDash(l.CEType), orDash(l.CEID), l.State, truncate(l.Error, 80))
	}
	t.flush()
	fmt.Fprintf(e.out, "%d dead letter(s) in %s\n", len(recs), topic)
	return nil
}

func dlqShow(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("dlq show", flag.ContinueOnError)
	f := addDLQFlags(fs)
	pos, err := parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	topic := pos[0]
	k, err := openKafka(e)
	if err != nil {
		return err
	}
	defer k.close()
	n, err := k.partitions(ctx, topic)
	if err != nil {
		return err
	}
	at, err := parseOffset(pos[1], n)
	if err != nil {
		return err
	}
	recs, err := k.read(ctx, topic, &at)
	if err != nil {
		return err
	}
	r := recs[0]
	var state map[partOff]dlqstate.Action
	if st, err := openState(ctx, e, *f.stateURL); err != nil {
		fmt.Fprintf(e.errOut, "keelctl: warning: state unknown: %v\n", err)
	} else {
		defer st.close()
		if state, err = st.all(ctx, topic); err != nil {
			return fmt.Errorf("dead-letter state: %w", err)
		}
	}
	l := letter(r, state)
	l.Headers = map[string]string{}
	for _, h := range r.Headers {
		l.Headers[h.Key] = string(h.Value)
	}
	l.Payload, l.PayloadBase64, l.DecodeError = decodePayload(codec.All(), l.CEType, r.Value)
	if *f.json {
		return jsonLine(e.out, l)
	}
	fmt.Fprintf(e.out, "dead letter %d:%d of %s (state: %s%s)\n", r.Partition, r.Offset, topic, l.State, reasonSuffix(l.StateReason))
	fmt.Fprintf(e.out, "key: %s\n\nheaders:\n", r.Key)
	t := newTable(e.out, "  HEADER", "VALUE")
	for _, h := range r.Headers {
		t.row("  "+h.Key, string(h.Value))
	}
	t.flush()
	fmt.Fprintln(e.out, "\npayload:")
	if l.DecodeError != "" {
		fmt.Fprintf(e.out, "  (%s)\n  base64: %s\n", l.DecodeError, l.PayloadBase64)
		return nil
	}
	var v any
	_ = json.Unmarshal(l.Payload, &v)
	b, _ := json.MarshalIndent(v, "  ", "  ")
	fmt.Fprintf(e.out, "  %s\n", b)
	return nil
}

// redriveResult is one line of redrive's report.
type redriveResult struct {
	DLQ             string `json:"dlq"`
	CEID            string `json:"ce_id"`
	Result          string `json:"result"` // redriven, would redrive, skipped, discarded
	OriginTopic     string `json:"origin_topic"`
	TargetPartition *int32 `json:"target_partition,omitempty"`
	TargetOffset    *int64 `json:"target_offset,omitempty"`
	Note            string `json:"note,omitempty"`
}

func dlqRedrive(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("dlq redrive", flag.ContinueOnError)
	f := addDLQFlags(fs)
	offset := fs.String("offset", "", "the dead letter to redrive, [PARTITION:]OFFSET")
	all := fs.Bool("all", false, "redrive every dead letter not yet redriven or discarded")
	dry := fs.Bool("dry-run", false, "print what would be redriven, change nothing")
	force := fs.Bool("force", false, "redrive even if already redriven or discarded")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if (*offset == "") == !*all {
		return fmt.Errorf("%w: dlq redrive needs exactly one of --offset or --all", errUsage)
	}
	topic := pos[0]
	k, err := openKafka(e)
	if err != nil {
		return err
	}
	defer k.close()
	n, err := k.partitions(ctx, topic)
	if err != nil {
		return err
	}
	var at *partOff
	if *offset != "" {
		x, err := parseOffset(*offset, n)
		if err != nil {
			return err
		}
		at = &x
	}
	recs, err := k.read(ctx, topic, at)
	if err != nil {
		return err
	}
	st, err := openState(ctx, e, *f.stateURL)
	if err != nil {
		return err
	}
	defer st.close()

	var results []redriveResult
	var refused error
	for _, r := range recs {
		res := redriveResult{DLQ: partOff{r.Partition, r.Offset}.String(), CEID: header(r, wire.HeaderID),
			OriginTopic: header(r, consume.HeaderDLQOriginTopic)}
		if res.OriginTopic == "" {
			res.Result, res.Note = "skipped", "no "+consume.HeaderDLQOriginTopic+" header: not a dead letter"
			if at != nil {
				refused = fmt.Errorf("%w: %s:%s has no %s header", errRefused, topic, res.DLQ, consume.HeaderDLQOriginTopic)
			}
			results = append(results, res)
			continue
		}
		if _, err := k.partitions(ctx, res.OriginTopic); err != nil {
			return fmt.Errorf("dead letter %s: origin topic: %w", res.DLQ, err)
		}
		err := st.Locked(ctx, topic, func(tx *dlqstate.Tx) error {
			why, err := previous(ctx, tx, r, true)
			if err != nil {
				return err
			}
			if why != "" && !*force {
				res.Result, res.Note = "skipped", why+"; --force to redrive again"
				if at != nil {
					refused = fmt.Errorf("%w: %s", errRefused, res.Note)
				}
				return nil
			}
			if why != "" {
				res.Note = "forced: " + why
			}
			if *dry {
				res.Result = "would redrive"
				return nil
			}
			out := &kgo.Record{Topic: res.OriginTopic, Key: r.Key, Value: r.Value, Headers: originalHeaders(r)}
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := k.cl.ProduceSync(pctx, out).FirstErr(); err != nil {
				return fmt.Errorf("produce to %s: %w", res.OriginTopic, err)
			}
			res.Result, res.TargetPartition, res.TargetOffset = "redriven", &out.Partition, &out.Offset
			if err := record(ctx, tx, r, dlqstate.Redriven, "", out); err != nil {
				return fmt.Errorf("redriven to %s/%d@%d but not recorded (a second redrive would repeat it): %w",
					out.Topic, out.Partition, out.Offset, err)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("redrive %s:%s: %w", topic, res.DLQ, err)
		}
		results = append(results, res)
	}
	e.json = *f.json
	printResults(e, results)
	return refused
}

func printResults(e *env, results []redriveResult) {
	if e.json {
		for _, r := range results {
			_ = jsonLine(e.out, r)
		}
		return
	}
	t := newTable(e.out, "DLQ", "CE_ID", "RESULT", "TARGET", "NOTE")
	counts := map[string]int{}
	for _, r := range results {
		target := r.OriginTopic
		if r.TargetPartition != nil {
			target = fmt.Sprintf("%s/%d@%d", r.OriginTopic, *r.TargetPartition, *r.TargetOffset)
		}
		t.row(r.DLQ, orDash(r.CEID), r.Result, orDash(target), r.Note)
		counts[r.Result]++
	}
	t.flush()
	var parts []string
	for _, k := range []string{"redriven", "would redrive", "discarded", "skipped"} {
		if counts[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
		}
	}
	if len(parts) == 0 {
		parts = []string{"nothing to do"}
	}
	fmt.Fprintln(e.out, strings.Join(parts, ", "))
}

func dlqDiscard(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("dlq discard", flag.ContinueOnError)
	f := addDLQFlags(fs)
	offset := fs.String("offset", "", "the dead letter to discard, [PARTITION:]OFFSET")
	reason := fs.String("reason", "", "why it is discarded (required, kept in the state)")
	force := fs.Bool("force", false, "discard even if already redriven or discarded")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *offset == "" || strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("%w: dlq discard needs --offset and --reason", errUsage)
	}
	topic := pos[0]
	k, err := openKafka(e)
	if err != nil {
		return err
	}
	defer k.close()
	n, err := k.partitions(ctx, topic)
	if err != nil {
		return err
	}
	at, err := parseOffset(*offset, n)
	if err != nil {
		return err
	}
	recs, err := k.read(ctx, topic, &at)
	if err != nil {
		return err
	}
	r := recs[0]
	st, err := openState(ctx, e, *f.stateURL)
	if err != nil {
		return err
	}
	defer st.close()
	res := redriveResult{DLQ: at.String(), CEID: header(r, wire.HeaderID), OriginTopic: header(r, consume.HeaderDLQOriginTopic)}
	var refused error
	err = st.Locked(ctx, topic, func(tx *dlqstate.Tx) error {
		why, err := previous(ctx, tx, r, false)
		if err != nil {
			return err
		}
		if why != "" && !*force {
			res.Result, res.Note = "skipped", why+"; --force to discard anyway"
			refused = fmt.Errorf("%w: %s", errRefused, res.Note)
			return nil
		}
		res.Result, res.Note = "discarded", *reason
		return record(ctx, tx, r, dlqstate.Discarded, *reason, nil)
	})
	if err != nil {
		return fmt.Errorf("discard %s:%s: %w", topic, at, err)
	}
	e.json = *f.json
	printResults(e, []redriveResult{res})
	return refused
}
