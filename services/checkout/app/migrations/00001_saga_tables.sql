-- +goose Up
-- The saga's durable timers (one row per checkout and kind) and its row
-- per checkout (status and start, for the in-flight metrics). IF NOT
-- EXISTS adopts the tables of a database the saga created before its
-- tables were migrated.
CREATE TABLE IF NOT EXISTS checkout_timers (
	checkout_id text NOT NULL,
	kind        text NOT NULL,
	due_at      timestamptz NOT NULL,
	PRIMARY KEY (checkout_id, kind)
);
CREATE INDEX IF NOT EXISTS checkout_timers_due ON checkout_timers (due_at);
CREATE TABLE IF NOT EXISTS checkout_sagas (
	checkout_id text PRIMARY KEY,
	status      text NOT NULL,
	started_at  timestamptz NOT NULL,
	updated_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS checkout_sagas_open ON checkout_sagas (started_at) WHERE status NOT IN ('completed', 'failed');

-- +goose Down
DROP TABLE checkout_sagas;
DROP TABLE checkout_timers;
