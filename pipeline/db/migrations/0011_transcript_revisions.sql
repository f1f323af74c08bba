-- Transcript revisions: people correct what the model wrote.
--
-- `transcripts` (and its `segments`) keeps holding exactly one transcript per audio:
-- the newest revision, so every reader (search, exports, deliveries, datasets) uses
-- it without knowing revisions exist. Each revision it replaces is copied first,
-- whole, into `transcript_revisions` by the triggers below: a correction (an UPDATE
-- that raises `revision`) and a re-transcription (the worker's DELETE and INSERT)
-- both keep what was there before, and no code path can forget to.

ALTER TABLE transcripts
    -- 1 for the first transcript of an audio; each correction or re-run adds one.
    ADD COLUMN revision integer NOT NULL DEFAULT 1 CHECK (revision >= 1),
    -- A person checked and corrected this revision (who: the token's subject, or the
    -- CLI's --by); the model's revisions are never verified.
    ADD COLUMN verified boolean NOT NULL DEFAULT false,
    ADD COLUMN verified_by text,
    ADD COLUMN verified_at timestamptz,
    ADD CONSTRAINT transcripts_verified_by_whom
        CHECK (NOT verified OR (verified_by IS NOT NULL AND verified_at IS NOT NULL));

CREATE INDEX transcripts_verified ON transcripts (audio_id) WHERE verified;

-- Every revision that is no longer the newest, as it was: the transcript row and its
-- segments (as JSON, so columns added later are kept too).
CREATE TABLE transcript_revisions (
    audio_id       uuid NOT NULL REFERENCES audio (id) ON DELETE CASCADE,
    revision       integer NOT NULL CHECK (revision >= 1),
    verified       boolean NOT NULL,
    verified_by    text,
    -- when this revision was made (the model's transcript, or the correction)
    made_at        timestamptz NOT NULL,
    superseded_at  timestamptz NOT NULL DEFAULT now(),
    transcript     jsonb NOT NULL,
    segments       jsonb NOT NULL,
    PRIMARY KEY (audio_id, revision)
);

CREATE FUNCTION ai2text_archive_transcript(old transcripts) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- Deleted with its audio: nothing is left to keep it for.
    IF NOT EXISTS (SELECT 1 FROM audio WHERE id = old.audio_id) THEN
        RETURN;
    END IF;
    INSERT INTO transcript_revisions
        (audio_id, revision, verified, verified_by, made_at, transcript, segments)
    SELECT old.audio_id, old.revision, old.verified, old.verified_by,
           coalesce(old.verified_at, old.created_at), to_jsonb(old),
           coalesce((SELECT jsonb_agg(to_jsonb(s) - 'tsv' - 'transcript_id' ORDER BY s.idx)
                       FROM segments s WHERE s.transcript_id = old.id), '[]'::jsonb)
    ON CONFLICT (audio_id, revision) DO NOTHING;
END
$$;

CREATE FUNCTION ai2text_transcript_replaced() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ai2text_archive_transcript(OLD);
    RETURN OLD;
END
$$;

-- Before the delete, while its segments are still there (they go by cascade after).
CREATE TRIGGER transcript_archive_on_delete
    BEFORE DELETE ON transcripts
    FOR EACH ROW EXECUTE FUNCTION ai2text_transcript_replaced();

CREATE FUNCTION ai2text_transcript_corrected() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.revision <= OLD.revision THEN
        RAISE EXCEPTION 'a transcript revision only grows (% to %)', OLD.revision, NEW.revision;
    END IF;
    PERFORM ai2text_archive_transcript(OLD);
    RETURN NEW;
END
$$;

-- A correction raises the revision before it replaces the segments.
CREATE TRIGGER transcript_archive_on_revision
    BEFORE UPDATE OF revision ON transcripts
    FOR EACH ROW WHEN (NEW.revision IS DISTINCT FROM OLD.revision)
    EXECUTE FUNCTION ai2text_transcript_corrected();

-- A re-transcription continues the audio's numbering after what is archived.
CREATE FUNCTION ai2text_transcript_numbered() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.revision := greatest(NEW.revision, 1 + coalesce(
        (SELECT max(revision) FROM transcript_revisions WHERE audio_id = NEW.audio_id), 0));
    RETURN NEW;
END
$$;

CREATE TRIGGER transcript_numbered
    BEFORE INSERT ON transcripts
    FOR EACH ROW EXECUTE FUNCTION ai2text_transcript_numbered();

-- A correction is an event of its audio (type transcript.corrected, state the audio's):
-- webhooks subscribed to it are told, and the transcript files beside a folder drop
-- or in a source's output bucket are written again with the corrected text.
CREATE FUNCTION ai2text_record_correction() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    event_uuid uuid;
    event_type text := 'transcript.corrected';
    owner audio%ROWTYPE;
BEGIN
    SELECT * INTO owner FROM audio WHERE id = NEW.audio_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO events (tenant, type, audio_id, state)
    VALUES (owner.tenant, event_type, owner.id, owner.state)
    RETURNING id INTO event_uuid;
    INSERT INTO deliveries (event_id, target)
    SELECT event_uuid, 'webhook:' || w.id FROM webhooks w
    WHERE w.enabled AND w.tenant = owner.tenant AND event_type = ANY (w.event_types);
    IF owner.state = 'transcribed' AND owner.source = 'folder' THEN
        INSERT INTO deliveries (event_id, target) VALUES (event_uuid, 'outbox');
    ELSIF owner.state = 'transcribed' AND owner.source = 's3' THEN
        INSERT INTO deliveries (event_id, target) VALUES (event_uuid, 'bucket');
    END IF;
    PERFORM pg_notify('ai2text_events', owner.tenant);
    PERFORM pg_notify('ai2text_deliveries', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER transcript_corrections
    AFTER UPDATE OF revision ON transcripts
    FOR EACH ROW WHEN (NEW.verified AND NEW.revision IS DISTINCT FROM OLD.revision)
    EXECUTE FUNCTION ai2text_record_correction();
