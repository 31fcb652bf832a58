-- +goose Up
-- The timer queue's state (services/kit/timers): claims so far, when a
-- claimed or failing row is due again, and its last error.
ALTER TABLE checkout_timers
  ADD COLUMN attempts   integer NOT NULL DEFAULT 0,
  ADD COLUMN retry_at   timestamptz,
  ADD COLUMN last_error text;

-- +goose Down
ALTER TABLE checkout_timers DROP COLUMN attempts, DROP COLUMN retry_at, DROP COLUMN last_error;
