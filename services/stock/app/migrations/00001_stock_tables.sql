-- +goose Up
-- The SKUs of each order's reservations, and the expiry timers (one row per
-- open reservation, kept by the timer projector). IF NOT EXISTS adopts the
-- tables of a database the service created before its tables were
-- migrated.
CREATE TABLE IF NOT EXISTS stock_order_skus (
  order_id text NOT NULL,
  sku      text NOT NULL,
  PRIMARY KEY (order_id, sku)
);
CREATE TABLE IF NOT EXISTS stock_timers (
  reservation_id text PRIMARY KEY,
  sku            text NOT NULL,
  due_at         timestamptz NOT NULL,
  fired_at       timestamptz
);
CREATE INDEX IF NOT EXISTS stock_timers_due ON stock_timers (due_at) WHERE fired_at IS NULL;

-- +goose Down
DROP TABLE stock_timers;
DROP TABLE stock_order_skus;
