// Package topics names Keel's Kafka topics and creates them with explicit
// settings. Brokers run with auto-create off: a topic that appears by
// accident gets the broker's defaults (one partition, short retention),
// which silently caps a consumer group's parallelism.
package topics

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Events is the topic a context's relay publishes its events to.
func Events(context string) string { return context + ".events" }

// Commands is the topic other contexts send a context's commands on.
func Commands(context string) string { return context + ".commands" }

// DLQ is the dead-letter topic of topic.
func DLQ(topic string) string { return topic + ".dlq" }

// Spec describes one topic.
type Spec struct {
	Name              string
	Partitions        int32
	ReplicationFactor int16             // -1: the broker's default
	Configs           map[string]string // topic-level overrides
}

// EventSpec is the spec of a context's event (or command) topic: key-hashed
// partitions, time retention long enough to rebuild consumers from Kafka
// (the event store stays the full history), and min.insync.replicas one
// below the replication factor so acks=all survives one broker's loss.
func EventSpec(name string, partitions int32, replication int16) Spec {
	return Spec{Name: name, Partitions: partitions, ReplicationFactor: replication, Configs: map[string]string{
		"cleanup.policy":         "delete",
		"retention.ms":           strconv.FormatInt(14*24*3600*1000, 10),
		"min.insync.replicas":    strconv.Itoa(max(1, int(replication)-1)),
		"message.timestamp.type": "CreateTime",
	}}
}

// DLQSpec is the spec of a dead-letter topic: kept long (90 days), since a
// dead letter waits for a person.
func DLQSpec(name string, partitions int32, replication int16) Spec {
	s := EventSpec(name, partitions, replication)
	s.Configs["retention.ms"] = strconv.FormatInt(90*24*3600*1000, 10)
	return s
}

// WithDLQ returns the specs of an event or command topic and of its
// dead-letter topic.
func WithDLQ(topic string, partitions int32, replication int16) []Spec {
	return []Spec{EventSpec(topic, partitions, replication), DLQSpec(DLQ(topic), partitions, replication)}
}

// EnsureAt is Ensure through a short-lived admin client on brokers, bounded
// to 30 seconds: what a process runs once at start.
func EnsureAt(ctx context.Context, brokers []string, specs ...Spec) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return fmt.Errorf("ensure topics: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return Ensure(ctx, kadm.NewClient(cl), specs...)
}

// Ensure creates the topics that do not exist yet. Existing topics are left
// as they are, except that a topic with fewer partitions than asked is an
// error: adding partitions would move keys and break per-key order, so that
// is an operator's decision.
func Ensure(ctx context.Context, adm *kadm.Client, specs ...Spec) error {
	for _, s := range specs {
		cfg := make(map[string]*string, len(s.Configs))
		for k, v := range s.Configs {
			cfg[k] = &v
		}
		resp, err := adm.CreateTopic(ctx, s.Partitions, s.ReplicationFactor, cfg, s.Name)
		if err == nil {
			err = resp.Err
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, kerr.TopicAlreadyExists):
			details, derr := adm.ListTopics(ctx, s.Name)
			if derr != nil {
				return fmt.Errorf("ensure topic %s: %w", s.Name, derr)
			}
			if d, ok := details[s.Name]; ok && d.Err == nil && int32(len(d.Partitions)) < s.Partitions {
				return fmt.Errorf("ensure topic %s: has %d partitions, want %d", s.Name, len(d.Partitions), s.Partitions)
			}
		default:
			return fmt.Errorf("ensure topic %s: %w", s.Name, err)
		}
	}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	return WaitReady(ctx, adm, names...)
}

// WaitReady waits until the broker's metadata lists every named topic with a
// leader for each partition. A CreateTopics answer means the controller has
// the topic; the broker that serves produce requests learns of it a moment
// later, and a produce in between fails with UNKNOWN_TOPIC_OR_PARTITION.
func WaitReady(ctx context.Context, adm *kadm.Client, names ...string) error {
	for {
		details, err := adm.ListTopics(ctx, names...)
		if err == nil && allLed(details, names) {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("partitions without a leader")
			}
			return fmt.Errorf("wait for topics %v: %w (%w)", names, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func allLed(details kadm.TopicDetails, names []string) bool {
	for _, n := range names {
		d, ok := details[n]
		if !ok || d.Err != nil || len(d.Partitions) == 0 {
			return false
		}
		for _, p := range d.Partitions {
			if p.Err != nil || p.Leader < 0 {
				return false
			}
		}
	}
	return true
}
