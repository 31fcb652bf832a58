-- +goose Up
-- One row per (Idempotency-Key, method, path): the first request's hash
-- and, once it finished with a status below 500, its response. A row in
-- 'in_flight' is a claim held by the request being handled; created_at
-- doubles as that claim's fencing token.
CREATE TABLE http_idempotency (
    key          text        NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 255),
    method       text        NOT NULL,
    path         text        NOT NULL,
    request_hash bytea       NOT NULL,
    status       int,
    headers      jsonb,
    body         bytea,
    state        text        NOT NULL CHECK (state IN ('in_flight', 'done')),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (key, method, path),
    CHECK ((state = 'done') = (status IS NOT NULL))
);

-- PurgeExpired deletes by age.
CREATE INDEX http_idempotency_created_at ON http_idempotency (created_at);

-- +goose Down
DROP TABLE http_idempotency;
