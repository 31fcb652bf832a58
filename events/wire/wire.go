// Package wire maps event envelopes to Kafka records and back.
//
// A record carries the payload bytes as its value and the envelope as
// CloudEvents 1.0 binary-mode headers, so any Kafka client in any language
// can route and decode it with nothing but schemas/:
//
//	key              stream id (so one stream stays in one partition, in order)
//	ce_specversion   "1.0"
//	ce_id            event id (KSUID)
//	ce_type          fully-qualified protobuf message name of the value
//	ce_source        the producing context, e.g. "keel/stock"
//	ce_subject       stream id
//	ce_time          RFC 3339 time the store recorded the event
//	content-type     "application/protobuf"
//	ce_streamversion version of the event inside its stream (decimal)
//	ce_position      global store position, "tx/global"
//	ce_correlationid correlation id (when set)
//	ce_causationid   causation id (when set)
//	traceparent      W3C trace context (when the event has one)
//	keel-meta-<k>    any other metadata entry
package wire

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keel-commerce/keel/events/envelope"
)

// Header names; see the package comment.
const (
	HeaderSpecVersion   = "ce_specversion"
	HeaderID            = "ce_id"
	HeaderType          = "ce_type"
	HeaderSource        = "ce_source"
	HeaderSubject       = "ce_subject"
	HeaderTime          = "ce_time"
	HeaderContentType   = "content-type"
	HeaderStreamVersion = "ce_streamversion"
	HeaderPosition      = "ce_position"
	HeaderCorrelationID = "ce_correlationid"
	HeaderCausationID   = "ce_causationid"
	HeaderTraceparent   = "traceparent"
	metaPrefix          = "keel-meta-"

	// SpecVersion is the CloudEvents version Keel speaks.
	SpecVersion = "1.0"
	// ContentType is the media type of every record value.
	ContentType = "application/protobuf"
)

// ErrMalformed reports a record that is not a Keel event.
var ErrMalformed = errors.New("malformed event record")

// Record builds the Kafka record for ev on topic, with source as ce_source.
func Record(topic, source string, ev envelope.Event) *kgo.Record {
	h := make([]kgo.RecordHeader, 0, 12+len(ev.Metadata))
	add := func(k, v string) { h = append(h, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
	add(HeaderSpecVersion, SpecVersion)
	add(HeaderID, ev.ID.String())
	add(HeaderType, ev.Type)
	add(HeaderSource, source)
	add(HeaderSubject, ev.StreamID)
	add(HeaderTime, ev.RecordedAt.UTC().Format(time.RFC3339Nano))
	add(HeaderContentType, ContentType)
	add(HeaderStreamVersion, strconv.FormatInt(ev.Version, 10))
	add(HeaderPosition, ev.Position.String())
	if ev.CorrelationID != "" {
		add(HeaderCorrelationID, ev.CorrelationID)
	}
	if ev.CausationID != "" {
		add(HeaderCausationID, ev.CausationID)
	}
	for k, v := range ev.Metadata {
		if k == envelope.MetaTraceparent {
			add(HeaderTraceparent, v)
			continue
		}
		add(metaPrefix+k, v)
	}
	return &kgo.Record{
		Topic:   topic,
		Key:     []byte(ev.StreamID),
		Value:   ev.Payload,
		Headers: h,
	}
}

// Event decodes the envelope of a record built by Record. The payload is
// returned as is (not copied).
func Event(r *kgo.Record) (envelope.Event, error) {
	var ev envelope.Event
	var haveID, haveType, haveVersion bool
	for _, h := range r.Headers {
		v := string(h.Value)
		switch h.Key {
		case HeaderID:
			id, err := ksuid.Parse(v)
			if err != nil {
				return ev, fmt.Errorf("%w: %s %q: %v", ErrMalformed, HeaderID, v, err)
			}
			ev.ID, haveID = id, true
		case HeaderType:
			ev.Type, haveType = v, v != ""
		case HeaderSubject:
			ev.StreamID = v
		case HeaderTime:
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return ev, fmt.Errorf("%w: %s %q: %v", ErrMalformed, HeaderTime, v, err)
			}
			ev.RecordedAt = t
		case HeaderStreamVersion:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return ev, fmt.Errorf("%w: %s %q: %v", ErrMalformed, HeaderStreamVersion, v, err)
			}
			ev.Version, haveVersion = n, true
		case HeaderPosition:
			p, err := envelope.ParsePosition(v)
			if err != nil {
				return ev, fmt.Errorf("%w: %v", ErrMalformed, err)
			}
			ev.Position = p
		case HeaderCorrelationID:
			ev.CorrelationID = v
		case HeaderCausationID:
			ev.CausationID = v
		case HeaderTraceparent:
			setMeta(&ev, envelope.MetaTraceparent, v)
		default:
			if k, ok := strings.CutPrefix(h.Key, metaPrefix); ok {
				setMeta(&ev, k, v)
			}
		}
	}
	if !haveID || !haveType || !haveVersion {
		return ev, fmt.Errorf("%w: needs %s, %s and %s headers", ErrMalformed, HeaderID, HeaderType, HeaderStreamVersion)
	}
	if ev.StreamID == "" {
		ev.StreamID = string(r.Key)
	}
	ev.Payload = r.Value
	return ev, nil
}

func setMeta(ev *envelope.Event, k, v string) {
	if ev.Metadata == nil {
		ev.Metadata = map[string]string{}
	}
	ev.Metadata[k] = v
}
