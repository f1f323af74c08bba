-- The model registry: every model a training run produced, where its files are in
-- object storage, what it measured, and whether workers run it. At most one model is
-- 'promoted' at a time; with none, workers run the configured asr.model.
CREATE TABLE models (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- What callers and `ai2text models` name it by (the OpenAI endpoint's `model`).
    name             text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$'),
    -- The model the run started from: a registry model's name, or asr.model's.
    base_model       text NOT NULL,
    -- The registry model it started from; NULL: the configured asr.model.
    base_model_id    uuid REFERENCES models (id) ON DELETE SET NULL,
    dataset_version_id bigint REFERENCES dataset_versions (id) ON DELETE SET NULL,
    -- Whose dataset trained it (NULL: none): a candidate is offered to that tenant only.
    tenant           text,
    run_id           uuid REFERENCES training_runs (id) ON DELETE SET NULL,
    -- The run's metrics.json as written (WER per split and per language, both models).
    metrics          jsonb NOT NULL DEFAULT '{}',
    size_bytes       bigint NOT NULL CHECK (size_bytes >= 0),
    -- Object-store prefix of its files, and each file: [{"name", "size", "sha256"}].
    prefix           text NOT NULL,
    files            jsonb NOT NULL,
    state            text NOT NULL DEFAULT 'candidate'
                         CHECK (state IN ('candidate', 'promoted', 'retired')),
    -- Why the last promotion decision went as it did (the gate's reason, or who forced it).
    decision         text,
    created_by       text NOT NULL DEFAULT 'orchestrator',
    created_at       timestamptz NOT NULL DEFAULT now(),
    promoted_at      timestamptz,
    promoted_by      text,
    retired_at       timestamptz,
    retired_by       text
);
CREATE UNIQUE INDEX models_one_promoted ON models ((true)) WHERE state = 'promoted';
CREATE INDEX models_created ON models (created_at DESC);

-- Every promotion, rollback and refusal, in order: rollback returns to the model
-- promoted before the current one.
CREATE TABLE model_events (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id     uuid REFERENCES models (id) ON DELETE CASCADE,
    action       text NOT NULL
                     CHECK (action IN ('registered', 'promoted', 'refused', 'retired',
                                       'rolled_back')),
    reason       text,
    actor        text NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_events_model ON model_events (model_id, seq);

-- Which registry model produced a transcript (NULL: the configured asr.model);
-- transcripts.model keeps the name.
ALTER TABLE transcripts ADD COLUMN model_id uuid REFERENCES models (id) ON DELETE SET NULL;

-- Which registry model each worker runs, and why it does not run the promoted one.
ALTER TABLE workers ADD COLUMN model_id uuid REFERENCES models (id) ON DELETE SET NULL;
ALTER TABLE workers ADD COLUMN model_problem text;
