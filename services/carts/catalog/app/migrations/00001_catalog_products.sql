-- +goose Up
-- The catalog's read table: one row per SKU, written with its events.
-- IF NOT EXISTS adopts the table of a database the service created before
-- its tables were migrated.
CREATE TABLE IF NOT EXISTS catalog_products (
  sku          text PRIMARY KEY,
  name         text NOT NULL,
  amount_minor bigint NOT NULL,
  currency     text NOT NULL,
  listed       boolean NOT NULL,
  updated_at   timestamptz NOT NULL
);

-- +goose Down
DROP TABLE catalog_products;
