-- +goose Up
-- One row per event. Order for readers of the whole log is (tx_id, global_position):
-- global_position comes from a sequence at insert time, but transactions commit
-- in another order; tx_id (the 64-bit transaction id, pg_current_xact_id) lets a
-- reader return only rows of transactions older than every running one.
CREATE TABLE events (
    global_position bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id           bigint      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    event_id        text        NOT NULL,
    stream_id       text        NOT NULL,
    version         bigint      NOT NULL CHECK (version > 0),
    type            text        NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    correlation_id  text        NOT NULL DEFAULT '',
    causation_id    text        NOT NULL DEFAULT '',
    payload         bytea       NOT NULL,
    metadata        jsonb,
    -- Optimistic concurrency backstop: two events can never share a version.
    CONSTRAINT events_stream_version UNIQUE (stream_id, version),
    CONSTRAINT events_event_id UNIQUE (event_id)
);
CREATE INDEX events_log_order ON events (tx_id, global_position);

-- Where each reader of the log (the relay, a rebuild) has got to.
CREATE TABLE event_readers (
    name          text        PRIMARY KEY,
    tx_id         bigint      NOT NULL,
    position      bigint      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE event_readers;
DROP TABLE events;
