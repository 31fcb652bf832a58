package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keel-commerce/keel/events/codec"
	"github.com/keel-commerce/keel/events/envelope"
	"github.com/keel-commerce/keel/events/store/pg"
)

// eventJSON is an event with its envelope fields and its payload decoded
// from schemas/ (or kept as base64 when this binary cannot decode it).
type eventJSON struct {
	ID            string            `json:"id"`
	Type          string            `json:"type"`
	Stream        string            `json:"stream"`
	Version       int64             `json:"version"`
	Position      string            `json:"position"`
	RecordedAt    string            `json:"recorded_at"`
	CorrelationID string            `json:"correlation_id,omitempty"`
	CausationID   string            `json:"causation_id,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	Payload       json.RawMessage   `json:"payload,omitempty"`
	PayloadBase64 string            `json:"payload_base64,omitempty"`
	DecodeError   string            `json:"decode_error,omitempty"`
}

func toJSON(reg *codec.Registry, ev envelope.Event) eventJSON {
	j := eventJSON{
		ID: ev.ID.String(), Type: ev.Type, Stream: ev.StreamID, Version: ev.Version,
		Position: ev.Position.String(), RecordedAt: ev.RecordedAt.UTC().Format(time.RFC3339Nano),
		CorrelationID: ev.CorrelationID, CausationID: ev.CausationID, Metadata: ev.Metadata,
	}
	j.Payload, j.PayloadBase64, j.DecodeError = decodePayload(reg, ev.Type, ev.Payload)
	return j
}

// decodePayload renders payload as JSON, or returns it as base64 with the
// reason it could not be decoded.
func decodePayload(reg *codec.Registry, typ string, payload []byte) (json.RawMessage, string, string) {
	b, err := reg.JSON(typ, payload)
	if err != nil {
		return nil, base64.StdEncoding.EncodeToString(payload), err.Error()
	}
	// Compact: protojson's whitespace is not stable.
	var v any
	if err := json.Unmarshal(b, &v); err == nil {
		if c, err := json.Marshal(v); err == nil {
			b = c
		}
	}
	return b, "", ""
}

func (j eventJSON) payloadText() string {
	if j.DecodeError != "" {
		return "(" + j.DecodeError + ")"
	}
	return string(j.Payload)
}

// openStore connects to a context's event store.
func openStore(ctx context.Context, e *env, ctxName, explicitURL string) (*pg.Store, *pgxpool.Pool, error) {
	if ctxName == "" && explicitURL == "" {
		return nil, nil, fmt.Errorf("%w: --context (or --database-url) is required", errUsage)
	}
	dsn, err := e.databaseURL(explicitURL, "keel_"+ctxName)
	if err != nil {
		return nil, nil, err
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("database %s: %w", redact(dsn), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("database %s: %w", redact(dsn), err)
	}
	st, err := pg.New(ctx, pool, pg.Options{})
	if err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("event store %s: %w", redact(dsn), err)
	}
	return st, pool, nil
}

func streamsShow(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("streams show", flag.ContinueOnError)
	ctxName := fs.String("context", "", "bounded context whose store holds the stream (stock, orders, …)")
	dbURL := fs.String("database-url", "", "the store's database URL (default: KEEL_PG_URL with database keel_<context>)")
	from := fs.Int64("from", 1, "first version")
	asJSON := fs.Bool("json", false, "JSON lines")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	stream := pos[0]
	st, pool, err := openStore(ctx, e, *ctxName, *dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer st.Close()
	reg := codec.All()

	var all []envelope.Event
	for next := *from; ; {
		evs, err := st.ReadStream(ctx, stream, next, 500)
		if err != nil {
			return fmt.Errorf("read stream %q: %w", stream, err)
		}
		all = append(all, evs...)
		if len(evs) < 500 {
			break
		}
		next = evs[len(evs)-1].Version + 1
	}
	n := len(all)
	if n == 0 {
		return fmt.Errorf("%w: stream %q has no events from version %d in %s", errNotFound, stream, *from, storeName(*ctxName, *dbURL))
	}
	if *asJSON {
		for _, ev := range all {
			if err := jsonLine(e.out, toJSON(reg, ev)); err != nil {
				return err
			}
		}
		return nil
	}
	t := newTable(e.out, "VERSION", "POSITION", "RECORDED", "TYPE", "ID", "PAYLOAD")
	for _, ev := range all {
		j := toJSON(reg, ev)
		t.row(strconv.FormatInt(j.Version, 10), j.Position, j.RecordedAt, j.Type, j.ID, j.payloadText())
	}
	t.flush()
	return nil
}

func storeName(ctxName, dbURL string) string {
	if dbURL != "" {
		return redact(dbURL)
	}
	return "keel_" + ctxName
}

var errCaughtUp = errors.New("caught up")

func streamsTail(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("streams tail", flag.ContinueOnError)
	ctxName := fs.String("context", "", "bounded context whose store to tail (stock, orders, …)")
	dbURL := fs.String("database-url", "", "the store's database URL (default: KEEL_PG_URL with database keel_<context>)")
	fromS := fs.String("from", "", "start after this position, tx/global as printed (default: the beginning)")
	follow := fs.Bool("follow", false, "keep following new events until interrupted")
	limit := fs.Int("limit", 0, "stop after this many events (0: no limit)")
	asJSON := fs.Bool("json", false, "JSON lines (full envelope); default one human line per event")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	var from envelope.Position
	if *fromS != "" && *fromS != "0" {
		p, err := envelope.ParsePosition(*fromS)
		if err != nil {
			return fmt.Errorf("%w: --from %q: want tx/global, e.g. 812/40: %v", errUsage, *fromS, err)
		}
		from = p
	}
	st, pool, err := openStore(ctx, e, *ctxName, *dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer st.Close()
	reg := codec.All()

	head, _, err := st.Head(ctx)
	if err != nil {
		return fmt.Errorf("store head: %w", err)
	}
	if !*follow && (head.IsZero() || !from.Less(head)) {
		return nil // nothing after from
	}
	n := 0
	err = st.Subscribe(ctx, from, func(_ context.Context, evs []envelope.Event) error {
		for _, ev := range evs {
			j := toJSON(reg, ev)
			if *asJSON {
				if err := jsonLine(e.out, j); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(e.out, "%s  %s  %s@%d  %s  %s\n", j.Position, j.RecordedAt, j.Stream, j.Version, j.Type, j.payloadText())
			}
			n++
			if *limit > 0 && n >= *limit {
				return errCaughtUp
			}
			if !*follow && !ev.Position.Less(head) {
				return errCaughtUp
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errCaughtUp):
		return nil
	case err != nil && ctx.Err() != nil:
		return nil // interrupted
	case err != nil:
		return fmt.Errorf("tail: %w", err)
	}
	return nil
}
