-- Full-text search over transcript segments, and per-job transcription options.

ALTER TABLE segments
    ADD COLUMN tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED;
CREATE INDEX segments_tsv ON segments USING gin (tsv);

-- What the uploader asked for (language, prompt, temperature, word timestamps).
ALTER TABLE jobs ADD COLUMN options jsonb NOT NULL DEFAULT '{}'::jsonb;

CREATE INDEX audio_tenant_created ON audio (tenant, created_at DESC, id DESC);
