-- +goose Up
-- What each command was, less its id (kind, target, hash of kind, target
-- and canonical input): a command id seen again with another fingerprint is
-- refused, not replayed. Rows from before have none and replay as before.
ALTER TABLE processed_commands
    ADD COLUMN kind        text  NOT NULL DEFAULT '',
    ADD COLUMN target      text  NOT NULL DEFAULT '',
    ADD COLUMN fingerprint bytea;

-- +goose Down
ALTER TABLE processed_commands
    DROP COLUMN fingerprint,
    DROP COLUMN target,
    DROP COLUMN kind;
