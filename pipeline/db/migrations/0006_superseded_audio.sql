-- A hot-folder file that changed after it was ingested (a writer resumed) or that
-- could not be read yet is taken again; the next version recorded for the same
-- source supersedes the earlier row. The earlier row and its transcript are kept
-- for the record, but never used for datasets nor shown as the file's current text.
ALTER TABLE audio
    -- the source is to be taken again: the next version recorded for source_uri replaces this row
    ADD COLUMN supersede_pending boolean NOT NULL DEFAULT false,
    -- the audio that replaced this one
    ADD COLUMN superseded_by uuid REFERENCES audio (id),
    ADD CHECK (superseded_by IS NULL OR superseded_by <> id);

CREATE INDEX audio_supersede_pending ON audio (source_uri) WHERE supersede_pending;
