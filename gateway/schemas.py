"""What the API's answers look like, as models for the OpenAPI document.

The routes build their answers from database rows; these models describe them for
``/docs`` and ``/redoc`` (each route names its model with :func:`answers`). They
allow more fields than they list, as the answers may grow. ``tests/e2e/
test_docs_offline.py`` checks real answers against them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def answers(model: type[BaseModel], status: int = 200, **extra: Any) -> dict[int | str, Any]:
    """A route's ``responses=`` naming the model of its answer."""
    return {status: {"model": model, **extra}}


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class Problem(Answer):
    """An error as RFC 9457 describes it."""

    type: str = Field(examples=["https://ai2text.dev/problems/not-found"])
    title: str
    status: int
    detail: str | None = None


class Ready(Answer):
    status: Literal["ready", "unavailable"]


class Figures(Answer):
    """The figures behind a transcript's verdict."""

    language_probability: float | None = None
    mean_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_ratio: float | None = None
    coverage: float | None = None
    speech_s: float | None = None
    covered_speech_s: float | None = None
    detected_language: str | None = None
    detected_language_probability: float | None = None


class AudioItem(Answer):
    """An audio file: where it came from, its state, its transcript's verdict, progress."""

    id: uuid.UUID
    tenant: str
    source: str
    original_name: str
    state: str
    error: str | None = None
    duration_s: float | None = None
    language: str | None = None
    size_bytes: int | None = None
    duplicate_of: uuid.UUID | None = None
    superseded_by: uuid.UUID | None = None
    created_at: datetime
    updated_at: datetime | None = None
    attempts: int | None = None
    verdict: str | None = None
    review_reasons: list[str] | None = None
    figures: Figures | None = None
    progress_s: float | None = None
    progress: float | None = Field(default=None, description="0..1 while transcribing")
    eta_s: float | None = None


class AudioPage(Answer):
    items: list[AudioItem]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class AudioDetail(AudioItem):
    source_uri: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    codec: str | None = None
    container: str | None = None
    sha256: str | None = None
    variant_of: uuid.UUID | None = Field(
        default=None,
        description="the row it transcribes again (other options, or a newer model)",
    )
    job_id: int | None = None
    job_state: str | None = None
    max_attempts: int | None = None
    last_error: str | None = None


class Uploaded(Answer):
    id: uuid.UUID
    outcome: str = Field(examples=["accepted", "duplicate"])
    duplicate_of: uuid.UUID | None = None


class Segment(Answer):
    idx: int
    start_s: float
    end_s: float
    text: str
    language: str | None = None
    channel: int | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    words: list[Any] | None = None


class TranscriptWithSegments(Answer):
    """A transcript with its segments (``format=json``; other formats are text)."""

    id: int
    audio_id: uuid.UUID
    language: str | None = None
    language_probability: float | None = None
    expected_language: str | None = None
    text: str
    model: str | None = None
    audio_duration_s: float | None = None
    processing_s: float | None = None
    real_time_factor: float | None = None
    options: dict[str, Any] | None = None
    verdict: str | None = None
    review_reasons: list[str] | None = None
    figures: Figures | None = None
    created_at: datetime
    segments: list[Segment]


class SearchHit(Answer):
    audio_id: uuid.UUID
    original_name: str
    segment: int
    start_s: float
    end_s: float
    rank: float
    snippet: str = Field(description="the matching text, matches in <mark>…</mark>")


class SearchResults(Answer):
    items: list[SearchHit]


class Job(Answer):
    id: int
    audio_id: uuid.UUID
    state: str
    attempts: int
    max_attempts: int
    last_error: str | None = None
    run_after: datetime | None = None
    worker_id: str | None = Field(default=None, description="operators only")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobPage(Answer):
    items: list[Job]
    next_cursor: str | None


class RetriedJob(Answer):
    id: int
    audio_id: uuid.UUID
    state: str


class Worker(Answer):
    worker_id: str
    hostname: str | None = None
    pid: int | None = None
    device: str | None = None
    compute_type: str | None = None
    model: str | None = None
    batch_size: int | None = None
    started_at: datetime | None = None
    last_seen_at: datetime | None = None
    stopped_at: datetime | None = None
    current_job_id: int | None = None
    jobs_done: int | None = None
    jobs_failed: int | None = None
    gpu_memory_used_bytes: int | None = None
    gpu_memory_total_bytes: int | None = None
    alive: bool


class Workers(Answer):
    items: list[Worker]


class Stats(Answer):
    audio_by_state: dict[str, int]
    jobs_by_state: dict[str, int]
    queue_depth: int
    hours_transcribed: float
    transcripts: int
    transcripts_by_verdict: dict[str, int]
    average_real_time_factor: float | None


class DatasetVersion(Answer):
    id: int
    tenant: str
    name: str
    version: int
    languages: list[str] | None = None
    state: str
    prefix: str
    audio_hours: float | None = None
    utterance_hours: float | None = None
    stats: dict[str, Any] | None = Field(default=None, description="hours per split and language")
    model: Any = None
    manifest_sha256: dict[str, Any] | None = None
    created_at: datetime
    frozen_at: datetime | None = None


class DatasetVersions(Answer):
    items: list[DatasetVersion]


class DatasetVersionDetail(DatasetVersion):
    filters: dict[str, Any] | None = None
    manifests: dict[str, str] = Field(description="manifest name: its download path")


class TrainingRun(Answer):
    id: int
    state: str
    launcher: str
    tenant: str
    dataset: str
    version: int
    languages: list[str] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    http_status: int | None = None
    remote_id: str | None = None
    log_key: str | None = None
    error: str | None = None
    created_at: datetime


class TrainingRuns(Answer):
    items: list[TrainingRun]


class Webhook(Answer):
    id: uuid.UUID
    tenant: str
    url: str
    event_types: list[str]
    origin: Literal["config", "api"]
    enabled: bool
    created_at: datetime
    pending: int | None = None
    delivered: int | None = None
    dead: int | None = None
    last_delivered_at: datetime | None = None


class Webhooks(Answer):
    items: list[Webhook]


class NewWebhookSecret(Webhook):
    secret: str = Field(description="the signing secret, shown this once")


class ChangedWebhook(Webhook):
    secret: str | None = Field(
        default=None, description="the new signing secret, shown this once (when rotated)"
    )


class Delivery(Answer):
    event_id: uuid.UUID
    target: str
    state: str
    attempts: int
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    event_type: str | None = None
    tenant: str
    audio_id: uuid.UUID | None = None
    original_name: str | None = None
    webhook_url: str | None = None


class Deliveries(Answer):
    items: list[Delivery]


class RecordedEvents(Answer):
    recorded: int


class OpenAIModel(Answer):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class OpenAIModels(Answer):
    object: Literal["list"]
    data: list[OpenAIModel]


class OpenAITranscription(Answer):
    """OpenAI's ``json`` shape; ``verbose_json`` adds language, duration and segments."""

    text: str
    language: str | None = None
    duration: float | None = None
    segments: list[dict[str, Any]] | None = None
