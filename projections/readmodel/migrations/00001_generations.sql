-- +goose Up
-- The copies ("generations") of every projection. Exactly one is active:
-- queries read it and the live builder writes it. At most one is being
-- built; its positions say how far it has read each source store, so a
-- crashed rebuild resumes where it stopped.
CREATE TABLE readmodel_generations (
    projection   text        NOT NULL,
    generation   integer     NOT NULL CHECK (generation > 0),
    schema_name  text        NOT NULL UNIQUE,
    state        text        NOT NULL CHECK (state IN ('building', 'active', 'retired')),
    positions    jsonb       NOT NULL DEFAULT '{}',
    events_read  bigint      NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    retired_at   timestamptz,
    PRIMARY KEY (projection, generation)
);
CREATE UNIQUE INDEX readmodel_one_active ON readmodel_generations (projection) WHERE state = 'active';
CREATE UNIQUE INDEX readmodel_one_building ON readmodel_generations (projection) WHERE state = 'building';

-- +goose Down
DROP TABLE readmodel_generations;
