-- What happened to audio, written in the same transaction as the change itself, and
-- what still has to be told to whom (webhooks, transcript files beside the audio or
-- in an output bucket). A trigger writes the events, so no code path that changes an
-- audio row's state can forget to: the outbox is exactly as durable as the change.

CREATE TABLE events (
    -- A cursor for streams (Server-Sent Events' Last-Event-ID): increases with time,
    -- though two concurrent transactions may commit out of order.
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- What receivers deduplicate by (at-least-once delivery).
    id           uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    tenant       text NOT NULL,
    -- 'audio.' || the audio's new state: audio.queued, audio.processing,
    -- audio.transcribed, audio.failed, audio.rejected, audio.duplicate
    type         text NOT NULL,
    audio_id     uuid NOT NULL,
    state        text NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_audio ON events (audio_id, seq);
CREATE INDEX events_occurred_at ON events (occurred_at);

-- Webhook endpoints; those from the settings are synced in at start (origin 'config'),
-- those registered through the admin API are 'api'.
CREATE TABLE webhooks (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant      text NOT NULL,
    url         text NOT NULL CHECK (url ~* '^https?://'),
    secret      text NOT NULL CHECK (length(secret) >= 16),
    event_types text[] NOT NULL
                    DEFAULT ARRAY['audio.transcribed', 'audio.failed', 'audio.rejected'],
    origin      text NOT NULL CHECK (origin IN ('config', 'api')),
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, url)
);

-- One row per (event, target) still to deliver or delivered. Targets:
-- 'webhook:<webhooks.id>'; 'outbox' (transcript files beside a transcribed folder
-- drop, written by the process that watches the folder); 'bucket' (transcript files
-- of a transcribed S3 object, to its source's output bucket). Duplicates get them too.
CREATE TABLE deliveries (
    event_id         uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    target           text NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, target)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_target_state ON deliveries (target, state);

CREATE FUNCTION ai2text_record_audio_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    event_uuid uuid;
    event_type text := 'audio.' || NEW.state;
    queued integer := 0;
    added integer;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.state IS NOT DISTINCT FROM OLD.state THEN
        RETURN NULL;
    END IF;
    INSERT INTO events (tenant, type, audio_id, state)
    VALUES (NEW.tenant, event_type, NEW.id, NEW.state)
    RETURNING id INTO event_uuid;
    INSERT INTO deliveries (event_id, target)
    SELECT event_uuid, 'webhook:' || w.id FROM webhooks w
    WHERE w.enabled AND w.tenant = NEW.tenant AND event_type = ANY (w.event_types);
    GET DIAGNOSTICS queued = ROW_COUNT;
    -- A duplicate (the same content under another name) gets its original's files.
    IF NEW.state IN ('transcribed', 'duplicate') AND NEW.source = 'folder' THEN
        INSERT INTO deliveries (event_id, target) VALUES (event_uuid, 'outbox');
        queued := queued + 1;
    ELSIF NEW.state IN ('transcribed', 'duplicate') AND NEW.source = 's3' THEN
        INSERT INTO deliveries (event_id, target) VALUES (event_uuid, 'bucket');
        queued := queued + 1;
    END IF;
    -- Duplicates waiting for this transcript to write their files need not wait out
    -- their backoff.
    IF NEW.state = 'transcribed' THEN
        UPDATE deliveries d SET next_attempt_at = now()
        FROM events e JOIN audio dup ON dup.id = e.audio_id
        WHERE dup.duplicate_of = NEW.id AND e.id = d.event_id AND e.state = 'duplicate'
          AND d.state = 'pending' AND d.target IN ('outbox', 'bucket');
        GET DIAGNOSTICS added = ROW_COUNT;
        queued := queued + added;
    END IF;
    -- Event streams hear of every change; delivery runners only when there is something
    -- for them (a flood of new files must not wake them once per file).
    PERFORM pg_notify('ai2text_events', NEW.tenant);
    IF queued > 0 THEN
        PERFORM pg_notify('ai2text_deliveries', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE INDEX audio_duplicates ON audio (duplicate_of) WHERE duplicate_of IS NOT NULL;

CREATE TRIGGER audio_events
    AFTER INSERT OR UPDATE OF state ON audio
    FOR EACH ROW EXECUTE FUNCTION ai2text_record_audio_event();

-- Interactive work (the OpenAI endpoint, uploads asking for it) is claimed before bulk
-- backlog. A job's priority is folded into its run_after (moved earlier by the queue's
-- priority head start), so the claim's index order is unchanged and a bulk job that has
-- waited longer than the head start still goes first: aging without a second index.
ALTER TABLE jobs
    ADD COLUMN priority smallint NOT NULL DEFAULT 0 CHECK (priority IN (0, 1)),
    -- Seconds of the audio transcribed so far (end of the last segment produced).
    ADD COLUMN progress_s double precision CHECK (progress_s >= 0),
    ADD COLUMN progress_at timestamptz;
-- Interactive jobs waiting while every worker is busy with bulk work: a worker looks
-- for one between the windows of a long file (and takes it first).
CREATE INDEX jobs_ready_urgent ON jobs (run_after, id) WHERE state = 'queued' AND priority = 1;
