package main

import (
	"context"
	"flag"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/keel-commerce/keel/events/topics"
)

// contexts are Keel's bounded contexts, each with a store and topics.
var contexts = []string{"catalog", "carts", "stock", "orders", "payments", "checkout"}

// specs returns every topic of the given contexts: events, commands and
// the dead-letter topic of each.
func specs(ctxs []string, partitions int32, replication int16) []topics.Spec {
	var out []topics.Spec
	for _, c := range ctxs {
		for _, t := range []string{topics.Events(c), topics.Commands(c)} {
			out = append(out, topics.EventSpec(t, partitions, replication),
				topics.DLQSpec(topics.DLQ(t), partitions, replication))
		}
	}
	return out
}

func contextList(s string) ([]string, error) {
	var out []string
	for _, c := range strings.Split(s, ",") {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: --contexts is empty", errUsage)
	}
	return out, nil
}

type topicJSON struct {
	Topic       string            `json:"topic"`
	Partitions  int               `json:"partitions"`
	Replication int               `json:"replication"`
	Status      string            `json:"status,omitempty"`
	Records     int64             `json:"records"`
	Configs     map[string]string `json:"configs,omitempty"`
}

func topicsEnsure(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("topics ensure", flag.ContinueOnError)
	ctxs := fs.String("contexts", strings.Join(contexts, ","), "contexts whose topics to create, comma-separated")
	partitions := fs.Int("partitions", 6, "partitions of each topic")
	replication := fs.Int("replication", 1, "replication factor (-1: the broker's default)")
	asJSON := fs.Bool("json", false, "JSON lines")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *partitions < 1 || *replication == 0 || *replication < -1 {
		return fmt.Errorf("%w: --partitions must be ≥ 1 and --replication ≥ 1 or -1", errUsage)
	}
	cs, err := contextList(*ctxs)
	if err != nil {
		return err
	}
	k, err := openKafka(e)
	if err != nil {
		return err
	}
	defer k.close()
	ss := specs(cs, int32(*partitions), int16(*replication))
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.Name
	}
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	before, err := k.adm.ListTopics(tctx, names...)
	if err != nil {
		return fmt.Errorf("kafka %v: %w", k.brokers, err)
	}
	if err := topics.Ensure(tctx, k.adm, ss...); err != nil {
		return err
	}
	// New topics take a moment to show in the metadata.
	var after kadm.TopicDetails
	for try := 0; ; try++ {
		after, err = k.adm.ListTopics(tctx, names...)
		if err != nil {
			return fmt.Errorf("kafka %v: %w", k.brokers, err)
		}
		complete := true
		for _, n := range names {
			if d, ok := after[n]; !ok || d.Err != nil || len(d.Partitions) == 0 {
				complete = false
			}
		}
		if complete || try == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var rows []topicJSON
	for _, s := range ss {
		status := "created"
		if d, ok := before[s.Name]; ok && d.Err == nil {
			status = "exists"
		}
		d := after[s.Name]
		rows = append(rows, topicJSON{Topic: s.Name, Partitions: len(d.Partitions), Replication: replicas(d), Status: status})
	}
	return printTopics(e, *asJSON, rows, false)
}

func replicas(d kadm.TopicDetail) int {
	n := 0
	for _, p := range d.Partitions {
		n = max(n, len(p.Replicas))
	}
	return n
}

func printTopics(e *env, asJSON bool, rows []topicJSON, describe bool) error {
	if asJSON {
		for _, r := range rows {
			if err := jsonLine(e.out, r); err != nil {
				return err
			}
		}
		return nil
	}
	if !describe {
		t := newTable(e.out, "TOPIC", "PARTITIONS", "REPLICATION", "STATUS")
		for _, r := range rows {
			t.row(r.Topic, strconv.Itoa(r.Partitions), strconv.Itoa(r.Replication), r.Status)
		}
		t.flush()
		return nil
	}
	t := newTable(e.out, "TOPIC", "PARTITIONS", "REPLICATION", "RECORDS", "RETENTION", "MIN.ISR", "CLEANUP")
	for _, r := range rows {
		ret := r.Configs["retention.ms"]
		if ms, err := strconv.ParseInt(ret, 10, 64); err == nil && ms > 0 {
			ret = (time.Duration(ms) * time.Millisecond).String()
			if ms%(24*3600*1000) == 0 {
				ret = fmt.Sprintf("%dd", ms/(24*3600*1000))
			}
		}
		t.row(r.Topic, strconv.Itoa(r.Partitions), strconv.Itoa(r.Replication), strconv.FormatInt(r.Records, 10),
			orDash(ret), orDash(r.Configs["min.insync.replicas"]), orDash(r.Configs["cleanup.policy"]))
	}
	t.flush()
	return nil
}

// isKeelTopic reports whether name is a context's events or commands
// topic or a dead-letter topic of one.
func isKeelTopic(name string) bool {
	name = strings.TrimSuffix(name, ".dlq")
	return strings.HasSuffix(name, ".events") || strings.HasSuffix(name, ".commands")
}

func topicsDescribe(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("topics describe", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "JSON lines")
	names, err := parse(fs, args, 0, -1)
	if err != nil {
		return err
	}
	k, err := openKafka(e)
	if err != nil {
		return err
	}
	defer k.close()
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var details kadm.TopicDetails
	if len(names) > 0 {
		details, err = k.adm.ListTopics(tctx, names...)
	} else {
		details, err = k.adm.ListTopics(tctx)
	}
	if err != nil {
		return fmt.Errorf("kafka %v: %w", k.brokers, err)
	}
	var missing []string
	for _, n := range names {
		if d, ok := details[n]; !ok || d.Err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: unknown topic(s) %s on %v", errNotFound, strings.Join(missing, ", "), k.brokers)
	}
	var list []string
	for n, d := range details {
		if d.Err == nil && (len(names) > 0 || isKeelTopic(n)) {
			list = append(list, n)
		}
	}
	sort.Strings(list)
	if len(list) == 0 {
		fmt.Fprintln(e.errOut, "keelctl: no Keel topics (create them with `keelctl topics ensure`)")
		return nil
	}
	cfgs, err := k.adm.DescribeTopicConfigs(tctx, list...)
	if err != nil {
		return fmt.Errorf("describe configs: %w", err)
	}
	starts, err := k.adm.ListStartOffsets(tctx, list...)
	if err != nil {
		return fmt.Errorf("start offsets: %w", err)
	}
	ends, err := k.adm.ListEndOffsets(tctx, list...)
	if err != nil {
		return fmt.Errorf("end offsets: %w", err)
	}
	var rows []topicJSON
	for _, n := range list {
		d := details[n]
		r := topicJSON{Topic: n, Partitions: len(d.Partitions), Replication: replicas(d), Configs: map[string]string{}}
		if rc, err := cfgs.On(n, nil); err == nil {
			for _, c := range rc.Configs {
				if c.Value != nil {
					switch c.Key {
					case "retention.ms", "min.insync.replicas", "cleanup.policy", "message.timestamp.type":
						r.Configs[c.Key] = *c.Value
					}
				}
			}
		}
		for p := range d.Partitions {
			s, _ := starts.Lookup(n, p)
			en, _ := ends.Lookup(n, p)
			if en.Offset > s.Offset {
				r.Records += en.Offset - s.Offset
			}
		}
		rows = append(rows, r)
	}
	return printTopics(e, *asJSON, rows, true)
}
