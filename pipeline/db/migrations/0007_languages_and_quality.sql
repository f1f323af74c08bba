-- Every language, and transcripts that say how sure they are.

-- A segment carries the language it was transcribed in (detected per window) and,
-- for split stereo, the channel it came from (0 = left).
ALTER TABLE segments ADD COLUMN language text;
ALTER TABLE segments ADD COLUMN channel smallint CHECK (channel >= 0);

ALTER TABLE transcripts
    -- the language the source asked for or expected (folder, bucket, tenant, request)
    ADD COLUMN expected_language text,
    -- the options it was transcribed with (language, prompt, vocabulary, channels, ...)
    ADD COLUMN options jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- speech time found by VAD and how much of it the segments cover
    ADD COLUMN speech_s double precision,
    ADD COLUMN covered_speech_s double precision,
    ADD COLUMN coverage double precision,
    -- duration-weighted over the segments
    ADD COLUMN mean_logprob double precision,
    ADD COLUMN compression_ratio double precision,
    ADD COLUMN no_speech_ratio double precision,
    ADD COLUMN verdict text NOT NULL DEFAULT 'review' CHECK (verdict IN ('ok', 'review')),
    ADD COLUMN review_reasons text[] NOT NULL DEFAULT '{}';

-- Transcripts made before these checks were never checked: say so rather than trust them.
UPDATE transcripts
   SET review_reasons = ARRAY['unchecked: transcribed before quality checks existed']
 WHERE verdict = 'review' AND review_reasons = '{}';
-- From now on every writer states the verdict.
ALTER TABLE transcripts ALTER COLUMN verdict DROP DEFAULT;

CREATE INDEX transcripts_verdict ON transcripts (verdict);

-- A dataset version is for one language or an explicit list (NULL: made before languages).
ALTER TABLE dataset_versions ADD COLUMN languages text[];
