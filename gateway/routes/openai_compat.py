"""``/v1/audio/transcriptions``, ``/v1/audio/translations`` and ``/v1/models`` in
OpenAI's shapes, so the ``openai`` client works.

The file is ingested like any other upload (stored, deduplicated, counted in the
dataset, queued ahead of bulk backlog); the call then waits for its transcript up to
the configured timeout and, if it is not done by then, answers 504 in OpenAI's error
shape naming the audio id and where its transcript will be (the job goes on). Errors
on these routes are in OpenAI's shape, not problem+json.

Models (``gateway.model_choice``): ``whisper-1`` and the default's own name mean the
model the workers run (the promoted one, else ``asr.model``); the configured
``asr.extra_models``, ``asr.model`` while another is promoted, and the caller's own
registry candidates are loaded by a worker for the job. ``/v1/models`` lists exactly
the names a call may give. Any other name is OpenAI's 404 ``model_not_found`` before
anything is stored.

Streaming (``stream=true``): one ``transcript.text.delta`` per segment as the worker
produces it (``job_partial_segments``, published about once a second), then a
``transcript.text.done`` with the whole text once the transcript is stored; segments
the live deltas did not cover (a duplicate's, or a retried job's) come as deltas just
before it. Comments keep the connection open while nothing new comes. A failure or
the wait running out after the stream began is an ``error`` event, which the
``openai`` client raises as ``APIError``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from gateway.auth import Principal
from gateway.context import AppContext, get_context
from gateway.errors import ApiError
from gateway.model_choice import WHISPER_ALIAS, Offered, choose, offered_models
from gateway.problems import openai_error, openai_error_body
from gateway.routes.audio import ingest_upload
from gateway.schemas import OpenAIModels, OpenAITranscription, answers
from gateway.security import require
from gateway.uploads import StagingRoute
from pipeline import catalog, models
from pipeline.choices import TRAINED_FROM
from pipeline.config import SubtitleSettings
from pipeline.db.partials import Follower, segments_after
from pipeline.formats import FORMATS, JSON, cues_of, openai_formats

# Uploads spool under the data directory (see gateway.uploads).
router = APIRouter(prefix="/v1", route_class=StagingRoute)

if TYPE_CHECKING:
    ResponseFormat = str
else:  # OpenAI's own shapes and the cue renderings offered to OpenAI clients
    ResponseFormat = Literal[openai_formats()]
Task = Literal["transcribe", "translate"]
OPENAI_ANSWERS = answers(
    OpenAITranscription,
    content={
        "text/plain": {"schema": {"type": "string"}},
        "text/event-stream": {"schema": {"type": "string"}},
    },
)
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


@router.get("/models", responses=answers(OpenAIModels))
async def list_models(
    ctx: Annotated[AppContext, Depends(get_context)],
    principal: Annotated[Principal, Depends(require("audio:write"))],
) -> dict[str, Any]:
    """The models a call here may name, in OpenAI's list shape, with languages and size.

    Exactly the names ``model`` accepts (see ``gateway.model_choice``). Paths on the
    server are not shown: callers need the names, not the layout.
    """
    data = []
    for offer in await offered_models(ctx, principal):
        entry = await _describe(ctx, offer)
        data.append({"id": offer.name, "object": "model", "created": 0, **entry})
    return {"object": "list", "data": data}


async def _describe(ctx: AppContext, offer: Offered) -> dict[str, Any]:
    """An offered model's entry: languages and size for installed ones, state for trained."""
    common: dict[str, Any] = {"owned_by": "ai2text", "default": offer.default}
    if offer.alias_of is not None:
        common["alias_of"] = offer.alias_of
    if offer.state is not None:
        common["state"] = offer.state
    if offer.source == "registry":
        return {**common, "source": "registry", "description": "trained here (ai2text models)"}
    asr = ctx.settings.asr
    entry = await asyncio.to_thread(
        models.describe,
        offer.job_model or str(asr.model),
        default=offer.default,
        cache_dir=asr.model_cache_dir,
    )
    fields = {k: v for k, v in entry.as_dict().items() if k not in ("name", "path", "problem")}
    fields["problem"] = None if entry.available else "unavailable on this server"
    return {**fields, **common}


@router.post("/audio/transcriptions", response_model=None, responses=OPENAI_ANSWERS)
async def create_transcription(
    ctx: Annotated[AppContext, Depends(get_context)],
    principal: Annotated[Principal, Depends(require("audio:write"))],
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form(max_length=200)] = WHISPER_ALIAS,
    language: Annotated[str | None, Form(max_length=8)] = None,
    prompt: Annotated[str | None, Form(max_length=2000)] = None,
    temperature: Annotated[float | None, Form(ge=0.0, le=1.0)] = None,
    response_format: Annotated[ResponseFormat, Form()] = JSON,
    timestamp_granularities: Annotated[
        list[Literal["word", "segment"]] | None, Form(alias="timestamp_granularities[]")
    ] = None,
    stream: Annotated[bool, Form()] = False,
) -> Response:
    """Whisper's transcription of ``file``, or its events with ``stream=true``."""
    if language is not None and not _LANGUAGE.match(language):
        raise ApiError(400, "language must be an ISO-639-1 code such as 'en'")
    chosen = await _check_model(ctx, principal, model)
    if isinstance(chosen, JSONResponse):
        return chosen
    granularities: set[str] = set(timestamp_granularities or [])
    options: dict[str, Any] = {
        "language": language,
        "prompt": prompt,
        "temperature": temperature,
        "word_timestamps": "word" in granularities,
        # None (the workers' model) leaves the option unset.
        "model": chosen.job_model,
        TRAINED_FROM: chosen.trained_from,
    }
    # Someone waits on the answer: ahead of bulk backlog.
    result = await ingest_upload(ctx, principal, file, options, priority="high")
    if stream:
        return StreamingResponse(
            _events(ctx, principal, result.audio_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    transcript = await _transcript_or_504(ctx, principal, result.audio_id)
    return _render(transcript, response_format, granularities, ctx.settings.subtitles)


@router.post("/audio/translations", response_model=None, responses=OPENAI_ANSWERS)
async def create_translation(
    ctx: Annotated[AppContext, Depends(get_context)],
    principal: Annotated[Principal, Depends(require("audio:write"))],
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form(max_length=200)] = WHISPER_ALIAS,
    prompt: Annotated[str | None, Form(max_length=2000)] = None,
    temperature: Annotated[float | None, Form(ge=0.0, le=1.0)] = None,
    response_format: Annotated[ResponseFormat, Form()] = JSON,
) -> Response:
    """``file`` in English, whatever it is spoken in (Whisper's translate task).

    A variant of its own: the same audio transcribed and translated keeps both texts.
    """
    chosen = await _check_model(ctx, principal, model)
    if isinstance(chosen, JSONResponse):
        return chosen
    languages = await _languages_of(ctx, chosen)
    if languages is not None and len(languages) == 1:
        return openai_error(
            400,
            "model_cannot_translate",
            f"model {chosen.alias_of or chosen.name} knows only {languages[0]!r} and cannot"
            " translate; ask for a multilingual model such as 'base' for translations",
            param="model",
        )
    options: dict[str, Any] = {
        "prompt": prompt,
        "temperature": temperature,
        "task": "translate",
        "model": chosen.job_model,
        TRAINED_FROM: chosen.trained_from,
    }
    result = await ingest_upload(ctx, principal, file, options, priority="high")
    transcript = await _transcript_or_504(ctx, principal, result.audio_id)
    return _render(transcript, response_format, set(), ctx.settings.subtitles, task="translate")


async def _languages_of(ctx: AppContext, chosen: Offered) -> tuple[str, ...] | None:
    """What the chosen model transcribes (None: unknown until a worker loads it)."""
    policy = ctx.ingestor.policy
    model = policy.checked_model(chosen.job_model, chosen.trained_from)
    if policy.knows_languages(model):
        return policy.languages(model)
    return await asyncio.to_thread(policy.languages, model)


async def _check_model(ctx: AppContext, principal: Principal, model: str) -> Offered | JSONResponse:
    """What ``model`` means here, or OpenAI's 404 for a name not offered to the caller."""
    chosen = await choose(ctx, principal, model)
    if chosen is not None:
        return chosen
    names = [offer.name for offer in await offered_models(ctx, principal)]
    return openai_error(
        404,
        "model_not_found",
        f"the model {model!r} does not exist here; use one of: {', '.join(names)}",
        param="model",
        error_type="invalid_request_error",
    )


def _pending(ctx: AppContext, audio_id: uuid.UUID) -> ApiError:
    """504: not a 2xx, which OpenAI's client would read as a transcript (text=None).

    The audio stays queued; a retry of the same file waits for the same job.
    """
    where = f"/v1/audio/{audio_id}"
    return ApiError(
        504,
        f"still transcribing after {ctx.settings.gateway.transcription_wait_s:g} s;"
        f" the transcript will be at {where}/transcript (audio {audio_id})",
        kind="transcription-pending",
        title="Transcription still running",
        headers={"Location": where},
    )


async def _transcript_or_504(
    ctx: AppContext, principal: Principal, audio_id: uuid.UUID
) -> dict[str, Any]:
    transcript = await _wait_for_transcript(ctx, principal, audio_id)
    if transcript is None:
        raise _pending(ctx, audio_id)
    return transcript


async def _events(
    ctx: AppContext, principal: Principal, audio_id: uuid.UUID
) -> AsyncIterator[bytes]:
    """OpenAI's transcription stream: deltas as segments come, then done; or an error event.

    While nothing new comes, SSE comments every ``gateway.sse_keepalive_s`` keep
    proxies from closing the connection.
    """
    keepalive_s = ctx.settings.gateway.sse_keepalive_s
    sent: list[str] = []  # the deltas sent, in order
    follower = Follower()
    waiting = asyncio.create_task(_wait_for_transcript(ctx, principal, audio_id))
    try:
        with ctx.waiter.watching(audio_id) as woken:
            while not waiting.done():
                woken.clear()
                async with ctx.db.connection() as conn:
                    segments = await segments_after(conn, audio_id, follower.after)
                restarted, segments = follower.take(segments)
                if restarted:
                    sent.clear()  # the job started again: the final text will say it all
                for segment in segments:
                    delta = segment.text if not sent else " " + segment.text
                    sent.append(delta)
                    yield _event({"type": "transcript.text.delta", "delta": delta})
                if waiting.done():
                    break
                wake = asyncio.create_task(woken.wait())
                done, _ = await asyncio.wait(
                    {waiting, wake}, timeout=keepalive_s, return_when=asyncio.FIRST_COMPLETED
                )
                wake.cancel()
                if not done:
                    yield b": still transcribing\n\n"
        try:
            transcript = waiting.result()
        except ApiError as failure:
            yield _error_event(failure)
            return
        if transcript is None:
            yield _error_event(_pending(ctx, audio_id))
            return
        final = text_deltas(transcript["segments"])
        if [d.strip() for d in final[: len(sent)]] == [d.strip() for d in sent]:
            for delta in final[len(sent) :]:
                yield _event({"type": "transcript.text.delta", "delta": delta})
        yield _event({"type": "transcript.text.done", "text": transcript["text"]})
    finally:
        waiting.cancel()


def text_deltas(segments: list[dict[str, Any]]) -> list[str]:
    """One delta per segment that says something; joined, they are the transcript's text."""
    texts = [s["text"].strip() for s in segments if s["text"].strip()]
    return [text if i == 0 else " " + text for i, text in enumerate(texts)]


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


def _error_event(failure: ApiError) -> bytes:
    """An error as the stream's last event; the ``openai`` client raises it as APIError."""
    message = failure.problem_detail or failure.title
    error = openai_error_body(failure.status, failure.kind, message)
    return _event({"type": "error", "error": error})


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
    *,
    task: Task = "transcribe",
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
        "task": task,
        # A translation is in English, whatever language was spoken.
        "language": "english"
        if task == "translate"
        else _LANGUAGE_NAMES.get(transcript["language"] or "", transcript["language"]),
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
