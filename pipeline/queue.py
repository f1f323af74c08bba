"""The job queue as workers use it: the job store's operations and the retry policy.

Every write lives in :mod:`pipeline.db.jobs`; this module only names them for
callers that think in terms of a queue.
"""

from pipeline.db.jobs import (
    JOBS_CHANNEL,
    TRANSCRIPTS_CHANNEL,
    ClaimedJob,
    RetryPolicy,
    claim,
    enqueue,
    fail,
    finish_without_transcript,
    heartbeat,
    holds_lease,
    mark_done,
    notify_finished,
    reap_exhausted,
    release,
)

__all__ = [
    "JOBS_CHANNEL",
    "TRANSCRIPTS_CHANNEL",
    "ClaimedJob",
    "RetryPolicy",
    "claim",
    "enqueue",
    "fail",
    "finish_without_transcript",
    "heartbeat",
    "holds_lease",
    "mark_done",
    "notify_finished",
    "reap_exhausted",
    "release",
]
