"""Documents written next to each transcript: the transcript JSON and a manifest shard.

Shards are written once per audio file (never appended to a shared object);
frozen dataset versions are assembled from the database, not from shards.
"""

from __future__ import annotations

import json
import uuid
from typing import Any


def transcript_key(audio_id: uuid.UUID, lease_token: uuid.UUID) -> str:
    # Keyed by lease so a worker that lost its lease can never overwrite the winner's copy.
    return f"transcripts/{audio_id}/{lease_token}.json"


def shard_key(audio_id: uuid.UUID, lease_token: uuid.UUID) -> str:
    return f"manifests/shards/{audio_id}/{lease_token}.jsonl"


def manifest_line(
    *,
    audio_filepath: str,
    duration: float,
    text: str,
    lang: str | None,
    audio_id: uuid.UUID | str,
    offset: float | None = None,
) -> str:
    """One NeMo-style manifest entry (a JSON object on one line).

    The one writer of the format, for the worker's per-file shards (whole files, no
    ``offset``) and for frozen dataset versions (one utterance at ``offset``).
    """
    entry: dict[str, Any] = {"audio_filepath": audio_filepath}
    if offset is not None:
        entry["offset"] = round(offset, 3)
    entry |= {
        "duration": round(duration, 3),
        "text": text,
        "lang": lang,
        "audio_id": str(audio_id),
    }
    return json.dumps(entry, ensure_ascii=False) + "\n"


def transcript_document(
    *,
    audio_id: uuid.UUID,
    model: str,
    language: str | None,
    duration: float,
    text: str,
    segments: list[dict[str, Any]],
    language_probability: float | None = None,
    expected_language: str | None = None,
    verdict: str | None = None,
    review_reasons: list[str] | None = None,
    figures: dict[str, Any] | None = None,
) -> bytes:
    """The transcript JSON: text, segments, and how sure it is.

    ``verdict`` is ``ok`` or ``review`` (with ``review_reasons``); ``figures`` are
    ``pipeline.quality.Quality.figures()``, what the verdict was made from.
    """
    doc = {
        "audio_id": str(audio_id),
        "model": model,
        "language": language,
        "language_probability": language_probability,
        "expected_language": expected_language,
        "duration": duration,
        "text": text,
        "verdict": verdict,
        "review_reasons": review_reasons or [],
        "figures": figures,
        "segments": segments,
    }
    return json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8")
