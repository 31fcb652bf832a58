package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// groupDatabase is the database that holds a consumer group's checkpoints
// in Keel: the projections' for live builders, the saga's, and each
// service's own for its command consumer.
func groupDatabase(group string) (string, bool) {
	switch {
	case strings.HasPrefix(group, "projection."):
		return "keel_projections", true
	case group == "checkout-saga":
		return "keel_checkout", true
	}
	if ctxName, ok := strings.CutSuffix(group, "-commands"); ok && ctxName != "" && !strings.ContainsAny(ctxName, ".-") {
		return "keel_" + ctxName, true
	}
	return "", false
}

// replayRow is one partition of a replay, as printed.
type replayRow struct {
	Group        string `json:"group"`
	Topic        string `json:"topic"`
	Partition    int32  `json:"partition"`
	Checkpoint   int64  `json:"checkpoint"`
	Checkpointed bool   `json:"checkpointed"`
	New          int64  `json:"new_offset"`
	Rerun        int64  `json:"records_rerun"`
	Skipped      int64  `json:"records_skipped,omitempty"`
	Action       string `json:"action"`
	Note         string `json:"note,omitempty"`
}

// offsetFlag is an optional int64 flag.
type offsetFlag struct {
	v   int64
	set bool
}

func (o *offsetFlag) String() string {
	if !o.set {
		return ""
	}
	return strconv.FormatInt(o.v, 10)
}

func (o *offsetFlag) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return fmt.Errorf("want an offset ≥ 0, got %q", s)
	}
	o.v, o.set = v, true
	return nil
}

func replay(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	group := fs.String("group", "", "the consumer group whose checkpoints move (projection.<name>, checkout-saga, <context>-commands, …)")
	topic := fs.String("topic", "", "the topic to re-run")
	var fromOffset offsetFlag
	fs.Var(&fromOffset, "from-offset", "re-run from this offset (in every partition, or in --partition)")
	fromTime := fs.String("from-time", "", "re-run from the first record at or after this time (RFC 3339)")
	partition := fs.Int("partition", -1, "only this partition (default: every partition)")
	dbURL := fs.String("database-url", "", "the database holding the group's consumer_checkpoints")
	ctxName := fs.String("context", "", "the group's database is keel_<context> on KEEL_PG_URL")
	execute := fs.Bool("execute", false, "move the checkpoints (default: dry run, print what would happen)")
	allowForward := fs.Bool("allow-forward", false, "allow moving a checkpoint forward (skips records)")
	asJSON := fs.Bool("json", false, "JSON lines")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	switch {
	case *group == "" || *topic == "":
		return fmt.Errorf("%w: replay needs --group and --topic", errUsage)
	case fromOffset.set == (*fromTime != ""):
		return fmt.Errorf("%w: replay needs exactly one of --from-offset and --from-time", errUsage)
	case *dbURL != "" && *ctxName != "":
		return fmt.Errorf("%w: give --database-url or --context, not both", errUsage)
	case *partition < -1:
		return fmt.Errorf("%w: --partition must be ≥ 0", errUsage)
	}
	var from time.Time
	if *fromTime != "" {
		t, err := time.Parse(time.RFC3339Nano, *fromTime)
		if err != nil {
			return fmt.Errorf("%w: --from-time %q: want RFC 3339, e.g. 2026-11-27T17:00:00Z", errUsage, *fromTime)
		}
		from = t
	}
	db := "keel_" + *ctxName
	if *ctxName == "" && *dbURL == "" {
		var ok bool
		if db, ok = groupDatabase(strings.TrimPrefix(*group, e.topicPrefix())); !ok {
			return fmt.Errorf("%w: cannot tell which database holds the checkpoints of group %q: pass --context or --database-url", errUsage, *group)
		}
	}
	dsn, err := e.databaseURL(*dbURL, db)
	if err != nil {
		return err
	}

	k, err := openKafka(e)
	if err != nil {
		return err
	}
	defer k.close()
	n, err := k.partitions(ctx, *topic)
	if err != nil {
		return err
	}
	var parts []int32
	for p := range int32(n) {
		if *partition < 0 || p == int32(*partition) {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return fmt.Errorf("%w: %s has no partition %d (it has %d)", errNotFound, *topic, *partition, n)
	}
	kctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	bounds, err := k.bounds(kctx, *topic)
	if err != nil {
		return err
	}
	targets := map[int32]int64{}
	notes := map[int32]string{}
	if fromOffset.set {
		for _, p := range parts {
			b := bounds[p]
			switch {
			case fromOffset.v > b[1]:
				return fmt.Errorf("%w: offset %d is past the end of %s/%d (%d)", errNotFound, fromOffset.v, *topic, p, b[1])
			case fromOffset.v < b[0]:
				targets[p] = b[0]
				notes[p] = fmt.Sprintf("log starts at %d (offsets before it are deleted)", b[0])
			default:
				targets[p] = fromOffset.v
			}
		}
	} else {
		after, err := k.adm.ListOffsetsAfterMilli(kctx, from.UnixMilli(), *topic)
		if err == nil {
			err = after.Error()
		}
		if err != nil {
			return fmt.Errorf("offsets of %s after %s: %w", *topic, from.UTC().Format(time.RFC3339), err)
		}
		for _, p := range parts {
			o, ok := after.Lookup(*topic, p)
			switch {
			case !ok || o.Offset < 0:
				targets[p] = bounds[p][1]
				notes[p] = "no record at or after that time"
			default:
				targets[p] = o.Offset
				if o.Offset >= bounds[p][1] {
					notes[p] = "no record at or after that time"
				}
			}
		}
	}

	pool, err := openPool(ctx, dsn, "checkpoint database")
	if err != nil {
		return err
	}
	defer pool.Close()
	var rows []replayRow
	var forward []string
	move := func(ctx context.Context, q pgx.Tx) error {
		cur, err := readCheckpoints(ctx, pool, q, *group, *topic, parts)
		if err != nil {
			return err
		}
		rows, forward = planReplay(*group, *topic, parts, cur, targets, notes, *allowForward)
		if !*execute {
			return nil
		}
		if len(forward) > 0 {
			return fmt.Errorf("%w: moving %s forward skips records; pass --allow-forward to do so (nothing was changed)",
				errRefused, strings.Join(forward, ", "))
		}
		for i := range rows {
			r := &rows[i]
			if r.New == r.Checkpoint {
				continue
			}
			if _, err := q.Exec(ctx, `INSERT INTO consumer_checkpoints (group_id, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()`,
				r.Group, r.Topic, r.Partition, r.New); err != nil {
				return fmt.Errorf("move checkpoint of %s/%d: %w", r.Topic, r.Partition, err)
			}
			r.Action = strings.Replace(r.Action, "would move", "moved", 1)
		}
		return nil
	}
	if *execute {
		err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return move(ctx, tx) })
	} else {
		err = move(ctx, nil)
	}
	if err != nil {
		return err
	}
	return printReplay(e, *asJSON, rows, *execute, *group)
}

// readCheckpoints reads group's checkpoints of parts, locking them when tx
// is given.
func readCheckpoints(ctx context.Context, pool *pgxpool.Pool, tx pgx.Tx, group, topic string, parts []int32) (map[int32]int64, error) {
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('consumer_checkpoints') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, err
	}
	if !exists {
		return nil, fmt.Errorf("%w: no consumer_checkpoints table in this database: is it the group's? (--context, --database-url)", errNotFound)
	}
	q := `SELECT partition, next_offset FROM consumer_checkpoints WHERE group_id = $1 AND topic = $2 AND partition = ANY($3)`
	var rows pgx.Rows
	var err error
	if tx != nil {
		rows, err = tx.Query(ctx, q+` FOR UPDATE`, group, topic, parts)
	} else {
		rows, err = pool.Query(ctx, q, group, topic, parts)
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoints of %s on %s: %w", group, topic, err)
	}
	out := map[int32]int64{}
	var p int32
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&p, &n}, func() error { out[p] = n; return nil })
	return out, err
}

// planReplay compares the checkpoints with the targets. A partition
// without a checkpoint counts as at 0: its consumer starts there (the log
// start). It returns the rows and the partitions a move would take
// forward.
func planReplay(group, topic string, parts []int32, cur, targets map[int32]int64, notes map[int32]string, allowForward bool) ([]replayRow, []string) {
	var rows []replayRow
	var forward []string
	for _, p := range parts {
		c, ok := cur[p]
		r := replayRow{Group: group, Topic: topic, Partition: p, Checkpoint: c, Checkpointed: ok, New: targets[p], Note: notes[p]}
		switch {
		case r.New < c:
			r.Rerun, r.Action = c-r.New, "would move back"
		case r.New > c:
			r.Skipped, r.Action = r.New-c, "would move forward"
			if !allowForward {
				r.Action = "forward: refused without --allow-forward"
				forward = append(forward, fmt.Sprintf("%s/%d", topic, p))
			}
		default:
			r.Action = "unchanged"
		}
		if !ok {
			r.Note = strings.TrimPrefix(r.Note+"; no checkpoint yet (the consumer starts at the log start)", "; ")
		}
		rows = append(rows, r)
	}
	return rows, forward
}

func printReplay(e *env, asJSON bool, rows []replayRow, executed bool, group string) error {
	var rerun, moved int64
	for _, r := range rows {
		rerun += r.Rerun
		if strings.HasPrefix(r.Action, "moved") {
			moved++
		}
	}
	if asJSON {
		for _, r := range rows {
			if err := jsonLine(e.out, r); err != nil {
				return err
			}
		}
		return nil
	}
	t := newTable(e.out, "TOPIC", "PARTITION", "CHECKPOINT", "NEW", "RE-RUN", "ACTION", "NOTE")
	for _, r := range rows {
		cp := strconv.FormatInt(r.Checkpoint, 10)
		if !r.Checkpointed {
			cp = "none"
		}
		t.row(r.Topic, strconv.Itoa(int(r.Partition)), cp, strconv.FormatInt(r.New, 10), strconv.FormatInt(r.Rerun, 10), r.Action, orDash(r.Note))
	}
	t.flush()
	if !executed {
		fmt.Fprintf(e.out, "dry run: %d record(s) would be re-run by %s; add --execute to move the checkpoints\n", rerun, group)
		return nil
	}
	fmt.Fprintf(e.out, "moved %d checkpoint(s) of %s; %d record(s) will be re-run: the running consumer seeks there at its next commit (an idle one at its next record or restart)\n",
		moved, group, rerun)
	return nil
}
