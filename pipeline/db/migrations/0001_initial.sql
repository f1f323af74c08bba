-- ai2text initial schema: audio, jobs, transcripts, segments.

CREATE TABLE audio (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant          text NOT NULL DEFAULT 'default',
    source          text NOT NULL CHECK (source IN ('folder', 's3', 'upload')),
    original_name   text NOT NULL,
    source_uri      text NOT NULL,
    -- what identifies this version of the source: size:mtime for files, etag for objects
    source_version  text,
    -- where an S3-sourced object lives; the worker fetches it pinned to source_etag
    source_bucket   text,
    source_key      text,
    source_etag     text,
    sha256          text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes      bigint CHECK (size_bytes >= 0),
    duration_s      double precision CHECK (duration_s >= 0),
    sample_rate     integer,
    channels        integer,
    codec           text,
    container       text,
    storage_key     text,
    state           text NOT NULL CHECK (state IN
                        ('queued', 'processing', 'transcribed', 'failed', 'rejected', 'duplicate')),
    error           text,
    duplicate_of    uuid REFERENCES audio (id),
    language        text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (state <> 'duplicate' OR duplicate_of IS NOT NULL),
    -- Accepted audio is content-addressed once its bytes are known: at ingest for
    -- files, when the worker has fetched it for objects left in a source bucket.
    CHECK (state NOT IN ('transcribed', 'duplicate') OR sha256 IS NOT NULL),
    CHECK (state IN ('rejected', 'failed') OR storage_key IS NOT NULL OR source_key IS NOT NULL)
);

-- One accepted audio row per content and tenant; duplicates and rejections point
-- elsewhere. Dedupe never crosses tenants, so no tenant learns what another holds.
CREATE UNIQUE INDEX audio_content_unique ON audio (tenant, sha256)
    WHERE state NOT IN ('rejected', 'duplicate');
-- One row per version of a source, so a re-delivered event or re-scanned file is a no-op.
CREATE UNIQUE INDEX audio_source_version_unique ON audio (source_uri, source_version)
    WHERE source_version IS NOT NULL;
CREATE INDEX audio_created_at ON audio (created_at DESC);
CREATE INDEX audio_state ON audio (state);

CREATE TABLE jobs (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    audio_id          uuid NOT NULL REFERENCES audio (id) ON DELETE CASCADE,
    kind              text NOT NULL DEFAULT 'transcribe',
    state             text NOT NULL DEFAULT 'queued'
                          CHECK (state IN ('queued', 'running', 'done', 'failed', 'dead')),
    attempts          integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL CHECK (max_attempts >= 1),
    run_after         timestamptz NOT NULL DEFAULT now(),
    lease_token       uuid,
    lease_expires_at  timestamptz,
    worker_id         text,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    UNIQUE (audio_id, kind)
);

CREATE INDEX jobs_ready ON jobs (run_after, id) WHERE state = 'queued';
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE state = 'running';

CREATE TABLE transcripts (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    audio_id              uuid NOT NULL UNIQUE REFERENCES audio (id) ON DELETE CASCADE,
    job_id                bigint REFERENCES jobs (id) ON DELETE SET NULL,
    attempt               integer NOT NULL,
    worker_id             text NOT NULL,
    language              text,
    language_probability  double precision,
    text                  text NOT NULL,
    model                 text NOT NULL,
    device                text NOT NULL,
    compute_type          text NOT NULL,
    audio_duration_s      double precision NOT NULL,
    processing_s          double precision NOT NULL,
    real_time_factor      double precision NOT NULL,
    json_key              text,
    manifest_key          text,
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE segments (
    transcript_id      bigint NOT NULL REFERENCES transcripts (id) ON DELETE CASCADE,
    idx                integer NOT NULL,
    start_s            double precision NOT NULL,
    end_s              double precision NOT NULL,
    text               text NOT NULL,
    avg_logprob        double precision,
    no_speech_prob     double precision,
    compression_ratio  double precision,
    words              jsonb,
    PRIMARY KEY (transcript_id, idx),
    CHECK (end_s >= start_s)
);

-- S3 notifications, recorded durably before they are acknowledged, then processed.
CREATE TABLE s3_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    origin        text NOT NULL CHECK (origin IN ('webhook', 'listen', 'reconcile')),
    bucket        text NOT NULL,
    key           text NOT NULL,
    event_name    text NOT NULL,
    size_bytes    bigint,
    etag          text,
    version_id    text,
    sequencer     text,
    state         text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'done', 'skipped', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    run_after     timestamptz NOT NULL DEFAULT now(),
    seen_etag     text,
    audio_id      uuid REFERENCES audio (id) ON DELETE SET NULL,
    error         text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX s3_events_pending ON s3_events (run_after, id) WHERE state = 'pending';
CREATE INDEX s3_events_object ON s3_events (bucket, key);
