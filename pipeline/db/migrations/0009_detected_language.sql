-- When a language was requested and forced on the model, what language detection heard
-- besides it and how sure it was (NULL: detection did not run separately). The
-- transcript's own language_probability is then what detection gave the requested one.
ALTER TABLE transcripts
    ADD COLUMN detected_language text,
    ADD COLUMN detected_language_probability double precision;
