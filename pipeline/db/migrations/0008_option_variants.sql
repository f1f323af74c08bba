-- The same audio sent again with other transcription options (language, prompt,
-- vocabulary, word timestamps, channels) is transcribed again with them: a variant row
-- shares its original's content and keeps its own job and transcript, so both results
-- stay. Only the original counts as "the" content of its tenant (and in datasets).

ALTER TABLE audio ADD COLUMN variant_of uuid REFERENCES audio (id);
ALTER TABLE audio ADD CONSTRAINT audio_variant_not_duplicate
    CHECK (variant_of IS NULL OR duplicate_of IS NULL);

DROP INDEX audio_content_unique;
CREATE UNIQUE INDEX audio_content_unique ON audio (tenant, sha256)
    WHERE state NOT IN ('rejected', 'duplicate') AND variant_of IS NULL;
CREATE INDEX audio_variants ON audio (variant_of) WHERE variant_of IS NOT NULL;
