-- +goose Up
-- One row per (consumer group, topic, partition): the offset of the next
-- record to apply. It is written in the same transaction as the handler's
-- effects, so the read model and its position can never disagree.
CREATE TABLE consumer_checkpoints (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL CHECK (partition >= 0),
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- +goose Down
DROP TABLE consumer_checkpoints;
