-- +goose Up
-- The abandon timers (see the package comment), one row per open cart.
-- IF NOT EXISTS adopts the table of a database the service created before
-- its tables were migrated.
CREATE TABLE IF NOT EXISTS cart_timers (
  cart_id text PRIMARY KEY,
  due_at  timestamptz NOT NULL,
  version bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS cart_timers_due ON cart_timers (due_at);

-- +goose Down
DROP TABLE cart_timers;
