-- +goose Up
-- One row per command ever decided, written in the transaction that stored
-- its events: a command id seen again gets this answer, and nothing new.
CREATE TABLE processed_commands (
    command_id    text        PRIMARY KEY,
    outcome       text        NOT NULL CHECK (outcome IN ('accepted', 'rejected')),
    response      bytea,
    reject_code   text        NOT NULL DEFAULT '',
    reject_detail text        NOT NULL DEFAULT '',
    tx_id         bigint      NOT NULL DEFAULT 0,
    position      bigint      NOT NULL DEFAULT 0,
    processed_at  timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE processed_commands;
