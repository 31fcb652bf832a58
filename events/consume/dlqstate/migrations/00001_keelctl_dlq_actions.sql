-- +goose Up
-- What was done with each dead letter (see dlq.go). IF NOT EXISTS adopts
-- the table of a database keelctl created before its tables were
-- migrated.
CREATE TABLE IF NOT EXISTS keelctl_dlq_actions (
	dlq_topic        text        NOT NULL,
	dlq_partition    integer     NOT NULL,
	dlq_offset       bigint      NOT NULL,
	ce_id            text        NOT NULL DEFAULT '',
	action           text        NOT NULL CHECK (action IN ('redriven', 'discarded')),
	reason           text        NOT NULL DEFAULT '',
	origin_topic     text        NOT NULL DEFAULT '',
	target_partition integer,
	target_offset    bigint,
	times            integer     NOT NULL DEFAULT 1,
	actor            text        NOT NULL DEFAULT '',
	at               timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);
CREATE INDEX IF NOT EXISTS keelctl_dlq_actions_ce_id ON keelctl_dlq_actions (dlq_topic, ce_id);

-- +goose Down
DROP TABLE keelctl_dlq_actions;
