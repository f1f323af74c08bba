"""Saving a finished transcription: objects first, then one fenced transaction.

The transcript JSON and manifest shard are written under keys that include the
lease token, so a worker that lost its lease can never overwrite the winner's
copies; if the commit is refused (fencing) its own copies are removed again.

A transcription is expensive and a database outage is not its fault: when the
commit cannot reach the database it is tried again (as long as the caller's
``wait_to_retry`` allows) instead of throwing the result away. A commit whose
acknowledgement was lost may have landed; before concluding "lease lost", the
retry looks for its own transcript row.

Every transcript is stored with how sure it is (``pipeline.quality``): its figures,
its verdict and the reasons for a ``review``, in its row and in its JSON document.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from psycopg.types.json import Jsonb

from pipeline.backoff import Backoff
from pipeline.config import QualitySettings
from pipeline.datasets.served import model_label
from pipeline.db import jobs
from pipeline.db.database import Database
from pipeline.db.segments import SegmentValues, insert_segments
from pipeline.errors import DatabaseUnavailable, LeaseLost
from pipeline.manifests import manifest_line, shard_key, transcript_document, transcript_key
from pipeline.metrics import Metrics
from pipeline.quality import Quality, assess
from pipeline.storage import ObjectStore
from workers.transcription import Transcriber, Transcription

# Given the next backoff delay, waits it out and says whether to try again.
RetryWait = Callable[[float], Awaitable[bool]]


async def _never_retry(delay_s: float) -> bool:
    return False


async def save_transcription(
    db: Database,
    store: ObjectStore,
    job: jobs.ClaimedJob,
    result: Transcription,
    *,
    storage_key: str,
    transcriber: Transcriber,
    worker_id: str,
    wait_to_retry: RetryWait = _never_retry,
    quality: QualitySettings | None = None,
    metrics: Metrics | None = None,
    model_id: uuid.UUID | None = None,
) -> Quality:
    """Store ``result`` for ``job`` with its verdict; raises ``LeaseLost`` if the job is no
    longer ours.

    ``quality`` holds the limits of the verdict (the defaults without it); ``metrics``
    counts the stored transcript by verdict and reason (not counted without it);
    ``model_id`` is the registry model that made it (None: the configured model).
    """
    judged = judge(result, job.options, quality or QualitySettings())
    json_key = transcript_key(job.audio_id, job.lease_token)
    manifest_key = shard_key(job.audio_id, job.lease_token)
    document = transcript_document(
        audio_id=job.audio_id,
        model=model_label(transcriber.model_name),
        language=result.language,
        duration=result.audio_duration_s,
        text=result.text,
        segments=[asdict(s) for s in result.segments],
        language_probability=result.language_probability,
        expected_language=expected_language(job.options),
        verdict=judged.verdict,
        review_reasons=judged.reason_texts,
        figures=judged.figures(),
    )
    line = manifest_line(
        audio_filepath=store.uri(storage_key),
        duration=result.audio_duration_s,
        text=result.text,
        lang=result.language,
        audio_id=job.audio_id,
    )
    await asyncio.to_thread(store.put_bytes, json_key, document, "application/json")
    await asyncio.to_thread(store.put_bytes, manifest_key, line.encode(), "application/jsonl")
    commit = functools.partial(
        _insert, db, job, result, judged, transcriber, worker_id, json_key, manifest_key, model_id
    )
    try:
        await _commit_through_outages(db, commit, json_key, wait_to_retry)
    except DatabaseUnavailable:
        # Given up while the database was unreachable: the last try may have landed, so
        # the objects stay (they are keyed by this lease and overwrite nothing).
        raise
    except BaseException:
        for key in (json_key, manifest_key):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(store.delete, key)
        raise
    if metrics is not None:
        count_verdict(metrics, judged)
    return judged


def expected_language(options: dict[str, Any]) -> str | None:
    """The language the job's source asked for (folder, bucket, tenant or request)."""
    language = options.get("language")
    return str(language) if language else None


def judge(result: Transcription, options: dict[str, Any], settings: QualitySettings) -> Quality:
    """The verdict on ``result`` for a job with ``options``.

    A transcriber that ran detection besides a requested language reports what it heard
    as ``detected_language``; without one, the transcript's own language is the evidence.
    """
    return assess(
        result.segments,
        language=result.language,
        language_probability=result.language_probability,
        expected_language=expected_language(options),
        speech_s=result.speech_s,
        covered_speech_s=result.covered_speech_s,
        settings=settings,
        detected_language=result.detected_language,
        detected_language_probability=result.detected_language_probability,
    )


def count_verdict(metrics: Metrics, quality: Quality) -> None:
    metrics.transcripts.labels(quality.verdict).inc()
    for kind in sorted({r.kind for r in quality.reasons}):
        metrics.transcript_review_reasons.labels(kind).inc()


async def _commit_through_outages(
    db: Database,
    commit: Callable[[], Awaitable[None]],
    json_key: str,
    wait_to_retry: RetryWait,
) -> None:
    outage = Backoff("database (saving a transcript)", base_s=0.5, cap_s=5.0)
    unsure = False  # an earlier try may have committed before its connection broke
    while True:
        try:
            await commit()
        except LeaseLost:
            if unsure and await _landed(db, json_key):
                outage.succeeded()
                return
            raise
        except DatabaseUnavailable as exc:
            unsure = True
            if not await wait_to_retry(outage.failed(str(exc))):
                raise
        else:
            outage.succeeded()
            return


async def _landed(db: Database, json_key: str) -> bool:
    async with db.connection() as conn:
        cur = await conn.execute("SELECT 1 FROM transcripts WHERE json_key = %s", (json_key,))
        return await cur.fetchone() is not None


async def _insert(
    db: Database,
    job: jobs.ClaimedJob,
    result: Transcription,
    quality: Quality,
    transcriber: Transcriber,
    worker_id: str,
    json_key: str,
    manifest_key: str,
    model_id: uuid.UUID | None = None,
) -> None:
    async with db.connection() as conn, conn.transaction():
        await jobs.mark_done(conn, job, language=result.language)
        # A re-run (e.g. for word timestamps) replaces the earlier transcript.
        await conn.execute("DELETE FROM transcripts WHERE audio_id = %s", (job.audio_id,))
        cur = await conn.execute(
            "INSERT INTO transcripts (audio_id, job_id, attempt, worker_id, language,"
            " language_probability, text, model, device, compute_type, audio_duration_s,"
            " processing_s, real_time_factor, json_key, manifest_key, expected_language,"
            " options, speech_s, covered_speech_s, coverage, mean_logprob, compression_ratio,"
            " no_speech_ratio, verdict, review_reasons, detected_language,"
            " detected_language_probability, model_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING id",
            (
                job.audio_id,
                job.id,
                job.attempt,
                worker_id,
                result.language,
                result.language_probability,
                result.text,
                transcriber.model_name,
                transcriber.device,
                transcriber.compute_type,
                result.audio_duration_s,
                result.processing_s,
                result.real_time_factor,
                json_key,
                manifest_key,
                expected_language(job.options),
                Jsonb(job.options),
                quality.speech_s,
                quality.covered_speech_s,
                quality.coverage,
                quality.mean_logprob,
                quality.compression_ratio,
                quality.no_speech_ratio,
                quality.verdict,
                quality.reason_texts,
                quality.detected_language,
                quality.detected_language_probability,
                model_id,
            ),
        )
        row = await cur.fetchone()
        assert row is not None
        transcript_id: int = row["id"]  # type: ignore[assignment]
        await insert_segments(
            conn,
            transcript_id,
            [
                SegmentValues(
                    start_s=s.start,
                    end_s=s.end,
                    text=s.text,
                    language=s.language,
                    channel=s.channel,
                    avg_logprob=s.avg_logprob,
                    no_speech_prob=s.no_speech_prob,
                    compression_ratio=s.compression_ratio,
                    words=s.words,
                )
                for s in result.segments
            ],
        )
        await jobs.notify_finished(conn, job.audio_id)
