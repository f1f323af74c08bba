-- Frozen dataset versions, what they hold, and the training runs launched on them.

CREATE TABLE dataset_versions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL,
    version         integer NOT NULL CHECK (version >= 1),
    -- freezing: number reserved, files being written; frozen: complete and immutable;
    -- abandoned: the writer died before finishing (the number is never reused)
    state           text NOT NULL DEFAULT 'freezing'
                        CHECK (state IN ('freezing', 'frozen', 'abandoned')),
    prefix          text NOT NULL,
    audio_hours     double precision,
    utterance_hours double precision,
    stats           jsonb,
    model           text,
    filters         jsonb,
    manifest_sha256 jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    frozen_at       timestamptz,
    UNIQUE (name, version)
);

CREATE TABLE dataset_items (
    version_id   bigint NOT NULL REFERENCES dataset_versions (id) ON DELETE CASCADE,
    audio_id     uuid NOT NULL REFERENCES audio (id),
    split        text NOT NULL CHECK (split IN ('train', 'dev', 'test')),
    utterances   integer NOT NULL,
    seconds      double precision NOT NULL,
    PRIMARY KEY (version_id, audio_id)
);

CREATE TABLE training_runs (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    version_id      bigint NOT NULL UNIQUE REFERENCES dataset_versions (id),
    state           text NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    launcher        text NOT NULL,
    owner           text,
    heartbeat_at    timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    exit_code       integer,
    http_status     integer,
    remote_id       text,
    log_key         text,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX training_runs_state ON training_runs (state);
