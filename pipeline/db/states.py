"""The states an audio row and a job can be in, and where audio comes from.

One definition for the whole code base: the SQL ``CHECK`` constraints (in the
migrations) are tested against these, and the API's literals and the metrics'
label lists are derived from them or tested against them.

::

    audio:  queued → processing → transcribed          (a job transcribed it)
                   ↘ queued (retry, release)  ↘ failed  (its job ended dead)
            rejected   (refused at ingest)    duplicate (same content as another row)

    job:    queued → running → done
                   ↖ (retry, release)  ↘ dead   (attempts used up or a permanent error)
            failed  (allowed by the schema, for operators; the worker never writes it)
"""

from __future__ import annotations

from enum import StrEnum


class AudioState(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    TRANSCRIBED = "transcribed"
    FAILED = "failed"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    DEAD = "dead"


class Source(StrEnum):
    """Where audio arrived: the hot folder, an S3 bucket, or an API upload."""

    FOLDER = "folder"
    S3 = "s3"
    UPLOAD = "upload"
