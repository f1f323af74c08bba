"""Typed settings: environment variables ``AI2TEXT_*`` and an optional TOML file.

Nested groups use ``__`` in environment names, e.g. ``AI2TEXT_DATABASE__URL`` or
``AI2TEXT_ASR__COMPUTE_TYPE``. Priority: environment, then the TOML file, then
defaults. The settings object is built once in the entry point and passed down.

Every ``AI2TEXT_*`` variable must name a setting, and list or table values must be
JSON: a misspelt name or ``a,b`` for a list is a ``ConfigError`` that names the
variable, never silently ignored.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from pipeline.errors import ConfigError
from pipeline.models import DEFAULT_MODEL

MiB = 1024 * 1024
GiB = 1024 * MiB

DEFAULT_EXTENSIONS = ("wav", "flac", "mp3", "m4a", "ogg", "opus", "webm", "mp4")


class _Section(BaseModel):
    """A settings group; misspelt keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


Channels = Literal["mix", "split"]
# An ISO-639 language code as Whisper names them ("en", "de", "haw", "yue").
LanguageCode = Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]
# Words and names the model should expect (passed as hotwords / prompt).
Vocabulary = tuple[Annotated[str, Field(min_length=1, max_length=100)], ...]
# Transcript files written for users (beside their audio, into an output bucket).
OutputFormat = Literal["txt", "srt", "vtt", "json"]
ALL_OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("txt", "srt", "vtt", "json")


class TranscriptionChoices(_Section):
    """What a source (folder, bucket, tenant) asks of the transcription; None: inherit.

    A source's choice wins over its tenant's, which wins over ``asr``'s.
    """

    language: LanguageCode | None = None
    channels: Channels | None = None
    vocabulary: Vocabulary = ()


class DatabaseSettings(_Section):
    """PostgreSQL connection; no ``url`` means an embedded server in the data directory."""

    url: SecretStr | None = None
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=8, ge=1)
    connect_timeout_s: float = Field(default=10.0, gt=0)


class StorageSettings(_Section):
    """Object storage; an ``endpoint`` selects S3/MinIO, else the filesystem store."""

    endpoint: str | None = None
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    bucket: str = "ai2text"
    region: str | None = None
    secure: bool = True
    timeout_s: float = Field(default=30.0, gt=0)
    chunk_bytes: int = Field(default=8 * MiB, ge=64 * 1024)


class WatchSettings(TranscriptionChoices):
    """The hot folder."""

    inbox: Path = Path("inbox")
    quiet_period_s: float = Field(default=2.0, ge=0)
    # A quiet file whose header promises more than it holds waits this long for the rest.
    incomplete_timeout_s: float = Field(default=600.0, ge=0)
    recheck_interval_s: float = Field(default=0.1, gt=0)
    rescan_interval_s: float = Field(default=60.0, gt=0)
    # Files taken at once; those that arrive together are recorded in one transaction.
    ingest_concurrency: int = Field(default=32, ge=1)
    # Processes that probe and hash dropped files (None: one per core; 0: in the watcher).
    ingest_processes: int | None = Field(default=None, ge=0)
    after_ingest: Literal["move", "delete", "keep"] = "move"
    processed_dir: Path | None = None
    rejected_dir: Path | None = None
    tenant: str = "default"
    min_free_bytes: int = Field(default=512 * MiB, ge=0)
    # Where transcript files of dropped audio go: None: <inbox>/transcripts (mirroring
    # the inbox's sub-folders), "beside": next to the processed file, "off": nowhere,
    # or a directory of its own.
    outbox: Literal["beside", "off"] | Path | None = None
    outbox_formats: tuple[OutputFormat, ...] = ALL_OUTPUT_FORMATS

    @property
    def processed_path(self) -> Path:
        return self.processed_dir or self.inbox / "processed"

    @property
    def rejected_path(self) -> Path:
        return self.rejected_dir or self.inbox / "rejected"


class ValidationSettings(_Section):
    """What counts as acceptable audio."""

    allowed_extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    max_bytes: int = Field(default=2 * GiB, gt=0)
    max_duration_s: float = Field(default=6 * 3600.0, gt=0)
    min_duration_s: float = Field(default=0.0, ge=0)


class QueueSettings(_Section):
    """Leases, retries and wake-ups of the job queue."""

    lease_s: float = Field(default=60.0, gt=0)
    heartbeat_s: float | None = Field(default=None, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    backoff_base_s: float = Field(default=5.0, ge=0)
    backoff_max_s: float = Field(default=600.0, ge=0)
    poll_interval_s: float = Field(default=5.0, gt=0)
    # How far ahead of bulk backlog a high-priority job (an interactive API request) is
    # queued; bulk jobs that have waited longer than this still go first (aging).
    priority_head_start_s: float = Field(default=600.0, ge=0)

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> QueueSettings:
        if self.heartbeat_s is not None and self.heartbeat_s >= self.lease_s:
            raise ValueError("queue.heartbeat_s must be shorter than queue.lease_s")
        return self

    @property
    def heartbeat_interval_s(self) -> float:
        return self.heartbeat_s or self.lease_s / 3


class AsrSettings(_Section):
    """The Whisper model and how it runs."""

    # Which ASR engine transcribes (``workers.engines``); windows, language and OOM
    # back-off are the same for every engine.
    engine: str = "faster-whisper"
    # "base" (multilingual, the default), "tiny.en" (fast, English only), a local
    # CTranslate2 directory, or a Hugging Face model id (fetched only when online).
    model: str = DEFAULT_MODEL
    # Where bundled models are assembled; None: $XDG_CACHE_HOME/ai2text/models.
    model_cache_dir: Path | None = None
    # Other models a request may name (OpenAI's `model`), loaded by a worker on first
    # use, one at a time beside the default: bundled names or CTranslate2 directories.
    extra_models: tuple[str, ...] = ()
    device: str = "auto"
    compute_type: str = "auto"
    # CTranslate2 threads per job; "auto": chosen for the machine (workers/sizing.py);
    # 0: CTranslate2's default.
    cpu_threads: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    beam_size: int = Field(default=5, ge=1)
    language: LanguageCode | None = None
    # Stereo: "mix" averages the channels; "split" transcribes each (one speaker per
    # channel, as in call recordings) and labels every segment with its channel.
    channels: Channels = "mix"
    vocabulary: Vocabulary = ()
    vad_filter: bool = True
    word_timestamps: bool = False
    temp_dir: Path | None = None
    # Jobs this process transcribes at once, sharing one model; "auto": chosen for the
    # cores, memory and device (workers/sizing.py); 0: no worker.
    concurrency: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    # Batched inference (faster-whisper's BatchedInferencePipeline over VAD-cut chunks).
    # None: batches of 16 on CUDA, sequential decoding on CPU. 1 is always sequential.
    batch_size: int | None = Field(default=None, ge=1)
    # Audio longer than this is decoded and transcribed window by window, each window
    # ending at a silence, so worker memory does not grow with the file's length.
    long_audio_s: float = Field(default=1800.0, gt=0)
    window_s: float = Field(default=300.0, ge=60)
    # Seconds of audio searched backwards from a window's nominal end for a silence.
    window_search_s: float = Field(default=30.0, ge=1)


class QualitySettings(_Section):
    """When a transcript is marked ``review`` instead of ``ok`` (and kept out of datasets)."""

    # Speech found by VAD that segments must cover, or the transcript is "incomplete".
    min_coverage: float = Field(default=0.8, ge=0, le=1)
    min_language_probability: float = Field(default=0.5, ge=0, le=1)
    # A detected language this sure that differs from the expected one is a mismatch.
    mismatch_probability: float = Field(default=0.8, ge=0, le=1)
    min_mean_logprob: float = -1.0
    max_compression_ratio: float = Field(default=2.4, gt=0)
    max_no_speech_ratio: float = Field(default=0.6, ge=0, le=1)


class TenantSettings(TranscriptionChoices):
    """Defaults for one tenant's audio (a source's own choices win)."""


class MetricsSettings(_Section):
    """Plain HTTP for Prometheus and probes: /metrics, /healthz, /readyz (no auth).

    Off unless a port is set; bind to a private interface (it is unauthenticated).
    """

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)
    queue_sample_interval_s: float = Field(default=15.0, gt=0)


class S3SourceSettings(TranscriptionChoices):
    """A watched bucket/prefix. Connection fields default to the ``storage`` group's."""

    bucket: str
    prefix: str = ""
    suffixes: tuple[str, ...] | None = None
    tenant: str = "default"
    listen: bool = False
    reconcile_interval_s: float = Field(default=300.0, gt=0)
    quiet_period_s: float = Field(default=2.0, ge=0)
    endpoint: str | None = None
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    region: str | None = None
    secure: bool | None = None
    # Transcript files of this source's objects go to this bucket (same connection),
    # keyed <output_prefix><source key>.<format>; None: not written.
    output_bucket: str | None = None
    output_prefix: str = ""
    output_formats: tuple[OutputFormat, ...] = ALL_OUTPUT_FORMATS

    def connection(self, storage: StorageSettings) -> StorageSettings:
        """Connection settings for this bucket, filled in from ``storage``."""
        return storage.model_copy(
            update={
                "endpoint": self.endpoint or storage.endpoint,
                "access_key": self.access_key or storage.access_key,
                "secret_key": self.secret_key or storage.secret_key,
                "region": self.region or storage.region,
                "secure": storage.secure if self.secure is None else self.secure,
                "bucket": self.bucket,
            }
        )


class WebhookSettings(_Section):
    """The S3 notification receiver (``POST /v1/events/s3``)."""

    token: SecretStr | None = None
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)


WebhookEventType = Literal[
    "audio.transcribed", "audio.failed", "audio.rejected", "transcript.corrected"
]


class WebhookEndpoint(_Section):
    """A URL told (signed POST) when one of its tenant's files is transcribed, fails or
    is rejected."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2000)]
    # Signs each delivery (HMAC-SHA256); at least 16 characters.
    secret: SecretStr = Field(min_length=16)
    tenant: str = "default"
    events: tuple[WebhookEventType, ...] = ("audio.transcribed", "audio.failed", "audio.rejected")


class DeliverySettings(_Section):
    """Outbound deliveries from the event outbox: webhooks and transcript files."""

    webhooks: tuple[WebhookEndpoint, ...] = ()
    # Whether webhook URLs may point at loopback/private/link-local addresses;
    # None: only on the embedded default (no database URL configured).
    allow_private_addresses: bool | None = None
    timeout_s: float = Field(default=10.0, gt=0)
    # Tries before a delivery is dead (visible in ``ai2text webhooks`` and the API);
    # with the backoff below, retries go on for hours.
    max_attempts: int = Field(default=25, ge=1)
    backoff_base_s: float = Field(default=10.0, ge=0)
    backoff_max_s: float = Field(default=3600.0, ge=0)
    concurrency: int = Field(default=8, ge=1)
    poll_interval_s: float = Field(default=5.0, gt=0)
    # Events (and their deliveries) older than this are deleted once nothing is pending.
    retention_days: float = Field(default=30.0, gt=0)


class GatewaySettings(_Section):
    """The HTTP server."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    cors_origins: tuple[str, ...] = ()
    rate_limit_per_minute: int = Field(default=600, ge=1)
    transcription_wait_s: float = Field(default=120.0, ge=0)
    page_size_max: int = Field(default=200, ge=1)
    # Requests refused for a missing or bad token, per client address (429 past it).
    auth_failures_per_minute: int = Field(default=60, ge=1)
    # A request's headers must arrive within this of its first byte (or of the connection).
    header_timeout_s: float = Field(default=10.0, gt=0)
    # A body that sends nothing for this long is dropped.
    body_idle_timeout_s: float = Field(default=30.0, gt=0)
    # Past this many open connections, new requests get 503.
    max_connections: int = Field(default=1000, ge=1)
    # Peers whose X-Forwarded-For names the client (e.g. a reverse proxy's address).
    trusted_proxies: tuple[str, ...] = ()
    # Server-Sent Event streams send a comment this often, so proxies keep them open.
    sse_keepalive_s: float = Field(default=15.0, gt=0)


class AuthSettings(_Section):
    """Bearer JWT verification (gateway) and local token minting (``ai2text token``).

    Keys come from ``public_key_file`` (PEM), ``jwks_file`` or ``jwks_url``; with none
    of them and ``dev_keys`` on, a key pair is created under ``<data_dir>/keys``.
    """

    algorithms: tuple[str, ...] = ("RS256", "ES256")
    audience: str = "ai2text"
    issuer: str = "ai2text"
    leeway_s: float = Field(default=30.0, ge=0)
    public_key_file: Path | None = None
    jwks_file: Path | None = None
    jwks_url: str | None = None
    jwks_cache_s: float = Field(default=300.0, gt=0)
    jwks_timeout_s: float = Field(default=5.0, gt=0)
    hs256_secret: SecretStr | None = None
    private_key_file: Path | None = None
    dev_keys: bool = True

    @model_validator(mode="after")
    def _hs256_needs_a_long_secret(self) -> AuthSettings:
        if "HS256" in self.algorithms:
            secret = self.hs256_secret.get_secret_value() if self.hs256_secret else ""
            if len(secret.encode()) < 32:
                raise ValueError("auth.hs256_secret must be at least 32 bytes to allow HS256")
        unknown = set(self.algorithms) - {"RS256", "ES256", "EdDSA", "HS256"}
        if unknown:
            raise ValueError(f"unsupported JWT algorithms: {sorted(unknown)}")
        return self


class ConsoleSettings(_Section):
    """The browser console's sign-in (``gateway.console_auth``)."""

    # A one-time sign-in link printed by `ai2text up`; None: on the embedded default
    # (no database URL) only.
    signin_link: bool | None = None
    signin_code_ttl_s: float = Field(default=900.0, gt=0)
    # Who the link signs in: an admin of every tenant.
    signin_subject: str = Field(default="console-admin", min_length=1, max_length=200)
    # A session ends after this, or when the token it was opened with expires.
    session_ttl_s: float = Field(default=12 * 3600.0, gt=0)


class DatasetSettings(_Section):
    """Which transcripts make training data, and how it is cut and split."""

    name: str = "default"
    max_no_speech_prob: float = Field(default=0.6, ge=0, le=1)
    min_avg_logprob: float = -1.0
    max_compression_ratio: float = Field(default=2.4, gt=0)
    min_segment_s: float = Field(default=0.3, ge=0)
    max_segment_s: float = Field(default=30.0, gt=0)
    max_utterance_s: float = Field(default=30.0, gt=0)
    train_ratio: float = Field(default=0.90, ge=0, le=1)
    dev_ratio: float = Field(default=0.05, ge=0, le=1)
    # Which datasets to make, one per entry: a language ("vi") or a list of languages
    # that share one dataset (["en", "de"]). Segments of languages named nowhere are
    # left out. Empty: every language found makes its own dataset.
    languages: tuple[LanguageCode | tuple[LanguageCode, ...], ...] = ()
    # Which transcripts are labels: "verified" (corrected by a person) only; "all",
    # verified ones and the model's own that pass the filters above; "auto", verified
    # only once the tenant has any, else the model's own (pipeline.datasets.eligibility).
    labels: Literal["auto", "verified", "all"] = "auto"

    @model_validator(mode="after")
    def _ratios_fit(self) -> DatasetSettings:
        if self.train_ratio + self.dev_ratio > 1.0 + 1e-9:
            raise ValueError("dataset.train_ratio + dataset.dev_ratio must not exceed 1")
        return self

    @model_validator(mode="after")
    def _one_dataset_per_language(self) -> DatasetSettings:
        seen: set[str] = set()
        for group in self.language_groups:
            if not group:
                raise ValueError("dataset.languages holds an empty list of languages")
            for code in group:
                if code in seen:
                    raise ValueError(
                        f"dataset.languages names {code!r} twice: a language goes to one dataset"
                    )
                seen.add(code)
        return self

    @property
    def language_groups(self) -> tuple[tuple[str, ...], ...]:
        """The configured datasets' languages, each sorted; empty: one per language found."""
        return tuple(
            (entry,) if isinstance(entry, str) else tuple(sorted(entry)) for entry in self.languages
        )


class CorrectionSettings(_Section):
    """Limits on one transcript correction (the API's PUT and ``ai2text correct``)."""

    max_body_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    max_segments: int = Field(default=20_000, gt=0)
    max_segment_chars: int = Field(default=2_000, gt=0)


class CommandLauncherSettings(_Section):
    """``command``: run an argv template on this machine, without a shell."""

    kind: Literal["command"] = "command"
    command: tuple[str, ...] = ()
    command_timeout_s: float = Field(default=24 * 3600.0, gt=0)
    command_env: dict[str, str] = Field(default_factory=dict)


class HttpLauncherSettings(_Section):
    """``http``: POST the version to a trainer's endpoint."""

    kind: Literal["http"] = "http"
    http_url: str | None = None
    http_token: SecretStr | None = None
    http_timeout_s: float = Field(default=30.0, gt=0)
    http_attempts: int = Field(default=5, ge=1)


# Each launcher's own settings, told apart by ``kind``; its implementation is the entry
# of the same kind in ``pipeline.datasets.launchers.LAUNCHERS``.
LauncherSettings = Annotated[
    CommandLauncherSettings | HttpLauncherSettings, Field(discriminator="kind")
]
LAUNCHER_SETTINGS: dict[str, type[BaseModel]] = {
    model.model_fields["kind"].default: model for model in get_args(get_args(LauncherSettings)[0])
}


class TrainingSettings(_Section):
    """When to train and how to hand a frozen version to a trainer.

    The launcher's settings live in ``launch`` (``[training.launch]`` with ``kind``).
    The flat form of earlier releases is still read: ``launcher`` names the kind and
    the launcher's own keys sit next to it (``training.command``, ``training.http_url``);
    keys of another launcher than the one chosen are ignored, as they always were.
    """

    enabled: bool = False
    threshold_hours: float = Field(default=100.0, gt=0)
    min_new_hours: float | None = Field(default=None, ge=0)
    check_interval_s: float = Field(default=60.0, gt=0)
    launch: LauncherSettings = Field(default_factory=CommandLauncherSettings)
    materialize_dir: Path | None = None
    min_free_bytes: int = Field(default=1024 * 1024 * 1024, ge=0)
    heartbeat_s: float = Field(default=10.0, gt=0)
    # The promotion gate (pipeline.registry.gate). A finished run's model is promoted
    # automatically only with auto_promote; else `ai2text models promote ID`.
    auto_promote: bool = False
    # Relative: the candidate's test WER must be at most (1 - margin) x the current's.
    promote_margin: float = Field(default=0.02, ge=0, lt=1)
    # Relative: its canary WER may be at most (1 + tolerance) x the current's.
    canary_tolerance: float = Field(default=0.10, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _fold_flat_launcher_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        flat = {key: data.pop(key) for key in list(data) if key in FLAT_LAUNCHER_FIELDS}
        launch = data.get("launch", {})
        if isinstance(launch, BaseModel):
            launch = dict(launch)
        if not isinstance(launch, dict):
            return data  # pydantic reports what is wrong with it
        kind = flat.pop("launcher", None) or launch.get("kind") or "command"
        model = LAUNCHER_SETTINGS.get(kind) if isinstance(kind, str) else None
        if model is None:
            known = ", ".join(LAUNCHER_SETTINGS)
            raise ValueError(f"unknown training launcher {kind!r}; known launchers: {known}")
        own = {key: _json_if_text(model, key, value) for key, value in flat.items()}
        data["launch"] = {
            **launch,
            "kind": kind,
            **{key: value for key, value in own.items() if key in model.model_fields},
        }
        return data

    @property
    def launcher(self) -> str:
        """The kind of launcher configured (``command``, ``http``)."""
        return self.launch.kind

    @property
    def new_hours_needed(self) -> float:
        return self.threshold_hours if self.min_new_hours is None else self.min_new_hours


class SubtitleSettings(_Section):
    """How SRT and WebVTT cut a transcript into cues (txt and json keep one line a segment).

    The defaults are common broadcast limits: two lines of 42 characters, 7 s a cue.
    """

    max_line_chars: int = Field(default=42, ge=10)
    max_lines: int = Field(default=2, ge=1)
    max_cue_s: float = Field(default=7.0, gt=0)


# Keys read at ``training`` level on behalf of ``training.launch`` (the flat form).
FLAT_LAUNCHER_FIELDS: dict[str, FieldInfo] = {
    "launcher": CommandLauncherSettings.model_fields["kind"],
    **{
        name: field
        for model in LAUNCHER_SETTINGS.values()
        for name, field in model.model_fields.items()
        if name != "kind"
    },
}


def _json_if_text(model: type[BaseModel], key: str, value: Any) -> Any:
    """A flat key's list or table from the environment arrives as JSON text."""
    field = model.model_fields.get(key)
    if field is None or not isinstance(value, str):
        return value
    if get_origin(field.annotation) not in (tuple, list, dict):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value  # pydantic reports it


class Settings(BaseSettings):
    """Everything ai2text can be told; see README for each variable."""

    model_config = SettingsConfigDict(
        env_prefix="AI2TEXT_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Path(".ai2text")
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace_s: float = Field(default=30.0, ge=0)

    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    watch: WatchSettings = WatchSettings()
    validation: ValidationSettings = ValidationSettings()
    queue: QueueSettings = QueueSettings()
    asr: AsrSettings = AsrSettings()
    quality: QualitySettings = QualitySettings()
    tenants: dict[str, TenantSettings] = Field(default_factory=dict)
    s3_sources: list[S3SourceSettings] = Field(default_factory=list)
    webhook: WebhookSettings = WebhookSettings()
    deliveries: DeliverySettings = DeliverySettings()
    gateway: GatewaySettings = GatewaySettings()
    auth: AuthSettings = AuthSettings()
    console: ConsoleSettings = ConsoleSettings()
    dataset: DatasetSettings = DatasetSettings()
    corrections: CorrectionSettings = CorrectionSettings()
    training: TrainingSettings = TrainingSettings()
    metrics: MetricsSettings = MetricsSettings()
    subtitles: SubtitleSettings = SubtitleSettings()

    @model_validator(mode="after")
    def _absolute_paths(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().absolute()
        w = self.watch
        w.inbox = w.inbox.expanduser().absolute()
        if w.processed_dir is not None:
            w.processed_dir = w.processed_dir.expanduser().absolute()
        if w.rejected_dir is not None:
            w.rejected_dir = w.rejected_dir.expanduser().absolute()
        if isinstance(w.outbox, Path):
            w.outbox = w.outbox.expanduser().absolute()
        if self.asr.temp_dir is not None:
            self.asr.temp_dir = self.asr.temp_dir.expanduser().absolute()
        if self.asr.model_cache_dir is not None:
            self.asr.model_cache_dir = self.asr.model_cache_dir.expanduser().absolute()
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            StrictEnvSource(settings_cls),
            TomlConfigSettingsSource(settings_cls),
            file_secret_settings,
        )

    @property
    def temp_dir(self) -> Path:
        return self.asr.temp_dir or self.data_dir / "tmp"


class StrictEnvSource(EnvSettingsSource):
    """The environment, refusing ``AI2TEXT_*`` names that are no setting and non-JSON lists."""

    def __call__(self) -> dict[str, Any]:
        prefix = self.env_prefix if self.case_sensitive else self.env_prefix.lower()
        for name, value in self.env_vars.items():
            if name.startswith(prefix):
                self._check(name, len(prefix), value)
        try:
            return super().__call__()
        except SettingsError as exc:  # a case _check let through: still one readable line
            raise ConfigError(f"{exc}: {exc.__cause__}") from exc

    def _check(self, name: str, prefix_len: int, value: str | None) -> None:
        """``name`` must lead to a field; a value for a list or table field must be JSON."""
        shown = name.upper()
        parts = name[prefix_len:].split(self.env_nested_delimiter or "__")
        models: tuple[type[BaseModel], ...] = (self.settings_cls,)
        for depth, part in enumerate(parts):
            field = _field_named(models, part)
            if field is None:
                where = f"the {'.'.join(parts[:depth])} group" if depth else "ai2text"
                raise ConfigError(f"unknown setting {shown}: {where} has no setting {part!r}")
            if depth == len(parts) - 1:
                self._check_json(shown, field, value)
                return
            nested = field.annotation
            if nested is dict or get_origin(nested) is dict:
                return  # a table's keys are free
            models = _groups(nested)
            if not models:
                path = ".".join(parts[: depth + 1])
                raise ConfigError(f"unknown setting {shown}: {path} is not a group of settings")

    def _check_json(self, shown: str, field: Any, value: str | None) -> None:
        if value is None or not self.field_is_complex(field):
            return  # a plain value, or one of several types: pydantic decides
        try:
            json.loads(value)
        except ValueError:  # the value is not repeated: it may hold a secret
            origin = get_origin(field.annotation) or field.annotation
            if origin in (list, tuple, set):
                kind = 'list such as ["a", "b"], not comma-separated text'
            else:
                kind = 'object such as {"key": "value"}'
            raise ConfigError(f"{shown} is not valid JSON: it must be a JSON {kind}") from None


def _field_named(models: tuple[type[BaseModel], ...], name: str) -> FieldInfo | None:
    """The field ``name`` of one of ``models`` (or a flat key one of them reads)."""
    for model in models:
        field = model.model_fields.get(name)
        if field is None and model is TrainingSettings:
            field = FLAT_LAUNCHER_FIELDS.get(name)
        if field is not None:
            return field
    return None


def _groups(annotation: Any) -> tuple[type[BaseModel], ...]:
    """The settings groups a field holds: its model, or each model of a union."""
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    return tuple(
        m for m in (members or (annotation,)) if isinstance(m, type) and issubclass(m, BaseModel)
    )


def is_setting_name(env_name: str) -> bool:
    """Whether ``AI2TEXT_A__B`` names a setting, as the environment is read at start-up."""
    source = StrictEnvSource(Settings)
    name = env_name.lower()
    if not name.startswith(source.env_prefix.lower()):
        return False
    try:
        source._check(name, len(source.env_prefix), None)
    except ConfigError:
        return False
    return True


def load_settings(config_file: Path | None = None) -> Settings:
    """Build the settings from the environment and, when given, a TOML file.

    Every problem is a ``ConfigError`` with one line that names the setting or file.
    """
    try:
        if config_file is None:
            return Settings()
        return _settings_with_file(config_file)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def _settings_with_file(config_file: Path) -> Settings:
    if not config_file.is_file():
        raise ConfigError(f"config file not found: {config_file}")

    class _FileSettings(Settings):
        model_config = SettingsConfigDict(
            env_prefix="AI2TEXT_",
            env_nested_delimiter="__",
            extra="forbid",
            toml_file=config_file,
        )

    try:
        return _FileSettings()
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_file} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """Pydantic's report on one line: ``where: what`` per problem, values left out (secrets)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        what = "unknown setting" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{where}: {what.removeprefix('Value error, ')}")
    return "; ".join(problems)
