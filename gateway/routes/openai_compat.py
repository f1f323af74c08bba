"""``POST /v1/audio/transcriptions`` in OpenAI's shapes, so the ``openai`` client works.

The file is ingested like any other upload (stored, deduplicated, counted in the
dataset); the call then waits for its transcript up to the configured timeout and,
if it is not done by then, answers 504 in OpenAI's error shape naming the audio id
and where its transcript will be (the job goes on). Errors on these routes are in
OpenAI's shape, not problem+json.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from gateway.auth import Principal
from gateway.context import AppContext, get_context
from gateway.errors import ApiError
from gateway.routes.audio import ingest_upload
from gateway.security import require
from gateway.uploads import StagingRoute
from pipeline import catalog, models
from pipeline.config import SubtitleSettings
from pipeline.formats import FORMATS, JSON, cues_of, openai_formats

# Uploads spool under the data directory (see gateway.uploads).
router = APIRouter(prefix="/v1", route_class=StagingRoute)

if TYPE_CHECKING:
    ResponseFormat = str
else:  # OpenAI's own shapes and the cue renderings offered to OpenAI clients
    ResponseFormat = Literal[openai_formats()]
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")
# OpenAI's verbose_json names the language in English; Whisper reports a code.
_LANGUAGE_NAMES = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
    "ru": "russian",
    "zh": "chinese",
    "ja": "japanese",
    "ko": "korean",
    "pl": "polish",
    "tr": "turkish",
    "uk": "ukrainian",
    "sv": "swedish",
}


@router.get("/models")
async def list_models(
    ctx: Annotated[AppContext, Depends(get_context)],
    principal: Annotated[Principal, Depends(require("audio:write"))],
) -> dict[str, Any]:
    """The Whisper models here, in OpenAI's list shape, with their languages and sizes.

    Paths on the server are not shown: callers need the names, not the layout.
    """
    asr = ctx.settings.asr
    entries = await asyncio.to_thread(models.list_models, asr.model, asr.model_cache_dir)
    return {
        "object": "list",
        "data": [
            {
                "id": e.name,
                "object": "model",
                "created": 0,
                "owned_by": "ai2text",
                **{k: v for k, v in e.as_dict().items() if k not in ("name", "path", "problem")},
                "problem": None if e.available else "unavailable on this server",
            }
            for e in entries
        ],
    }


@router.post("/audio/transcriptions", response_model=None)
async def create_transcription(
    ctx: Annotated[AppContext, Depends(get_context)],
    principal: Annotated[Principal, Depends(require("audio:write"))],
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form(max_length=100)] = "whisper-1",
    language: Annotated[str | None, Form(max_length=8)] = None,
    prompt: Annotated[str | None, Form(max_length=2000)] = None,
    temperature: Annotated[float | None, Form(ge=0.0, le=1.0)] = None,
    response_format: Annotated[ResponseFormat, Form()] = JSON,
    timestamp_granularities: Annotated[
        list[Literal["word", "segment"]] | None, Form(alias="timestamp_granularities[]")
    ] = None,
) -> Response:
    if language is not None and not _LANGUAGE.match(language):
        raise ApiError(400, "language must be an ISO-639-1 code such as 'en'")
    granularities: set[str] = set(timestamp_granularities or [])
    options: dict[str, Any] = {
        "language": language,
        "prompt": prompt,
        "temperature": temperature,
        "word_timestamps": "word" in granularities,
    }
    # Someone waits on the answer: ahead of bulk backlog.
    result = await ingest_upload(ctx, principal, file, options, priority="high")
    transcript = await _wait_for_transcript(ctx, principal, result.audio_id)
    if transcript is None:
        # Not a 2xx: OpenAI's client would read any success body as a transcript (text=None).
        # The audio stays queued; a retry of the same file waits for the same job.
        where = f"/v1/audio/{result.audio_id}"
        raise ApiError(
            504,
            f"still transcribing after {ctx.settings.gateway.transcription_wait_s:g} s;"
            f" the transcript will be at {where}/transcript (audio {result.audio_id})",
            kind="transcription-pending",
            title="Transcription still running",
            headers={"Location": where},
        )
    return _render(transcript, response_format, granularities, ctx.settings.subtitles)


async def _wait_for_transcript(
    ctx: AppContext, principal: Principal, audio_id: uuid.UUID
) -> dict[str, Any] | None:
    """The transcript once it exists, or None at the deadline.

    Audio seen before with other options (word timings, language, prompt) was
    ingested as a variant with its own job, so its transcript has what was asked.
    """
    deadline = time.monotonic() + ctx.settings.gateway.transcription_wait_s
    tenant = principal.tenant_filter()
    while True:
        async with ctx.db.connection() as conn:
            transcript = await catalog.get_transcript(conn, tenant=tenant, audio_id=audio_id)
            if transcript is not None:
                return transcript
            audio = await catalog.get_audio(conn, tenant=tenant, audio_id=audio_id)
        # A duplicate's transcript is its original's: wait on the original's job.
        waiting_on = audio["duplicate_of"] if audio and audio["duplicate_of"] else audio_id
        if audio is not None and audio["state"] in ("failed", "rejected"):
            raise ApiError(
                422,
                audio["error"] or "transcription failed",
                kind="transcription-failed",
                title="Transcription failed",
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        await ctx.waiter.wait(waiting_on, min(remaining, 5.0))


def _render(
    transcript: dict[str, Any],
    fmt: ResponseFormat,
    granularities: set[str],
    subtitles: SubtitleSettings,
) -> Response:
    segments = transcript["segments"]
    text = transcript["text"]
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt in FORMATS:
        # OpenAI answers every text rendering as text/plain; clients rely on no more.
        cues = cues_of(segments)
        return PlainTextResponse(FORMATS[fmt].render(cues, subtitles))
    if fmt == JSON:
        return JSONResponse({"text": text})
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": _LANGUAGE_NAMES.get(transcript["language"] or "", transcript["language"]),
        "duration": transcript["audio_duration_s"],
        "text": text,
    }
    if not granularities or "segment" in granularities:
        body["segments"] = [
            {
                "id": s["idx"],
                "seek": 0,
                "start": s["start_s"],
                "end": s["end_s"],
                "text": s["text"],
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": s["avg_logprob"],
                "compression_ratio": s["compression_ratio"],
                "no_speech_prob": s["no_speech_prob"],
            }
            for s in segments
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w["word"].strip(), "start": w["start"], "end": w["end"]}
            for s in segments
            for w in (s["words"] or [])
        ]
    return JSONResponse(body)
