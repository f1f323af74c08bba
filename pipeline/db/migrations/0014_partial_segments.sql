-- Segments of a running transcription, published as the worker produces them (about
-- once a second, with its progress), so that event streams, the OpenAI endpoint's
-- stream and `show --follow` can show text before the job ends. Written only by the
-- job's lease holder (fenced like progress). They are a preview: the transcript stored
-- at the end is the truth, and a job's rows go when its claim ends (finished, failed,
-- dead, given back, or claimed again under a new lease).
CREATE TABLE job_partial_segments (
    -- A reader's cursor: increases with time (a later claim's rows come after).
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    -- The claim that produced it: a new claim starts the text again.
    lease_token  uuid NOT NULL,
    -- The segment's number within the claim, from 0.
    seq          integer NOT NULL,
    audio_id     uuid NOT NULL,
    start_s      double precision NOT NULL,
    end_s        double precision NOT NULL,
    text         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, lease_token, seq)
);
CREATE INDEX job_partial_segments_audio ON job_partial_segments (audio_id, id);

CREATE FUNCTION ai2text_clear_partial_segments() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_partial_segments
    WHERE job_id = NEW.id
      AND (NEW.state <> 'running' OR lease_token IS DISTINCT FROM NEW.lease_token);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_clear_partial_segments
    AFTER UPDATE OF state, lease_token ON jobs
    FOR EACH ROW
    WHEN (NEW.state IS DISTINCT FROM OLD.state
          OR NEW.lease_token IS DISTINCT FROM OLD.lease_token)
    EXECUTE FUNCTION ai2text_clear_partial_segments();
