"""Every Prometheus metric ai2text exports, in one registry per process.

One ``Metrics`` object is built by the runtime and passed down to the roles it
runs, so ``ai2text up`` (all roles in one process) and a role running alone
export the same names. Names and labels are documented in ``docs/metrics.md``;
change both together. Counters get Prometheus' ``_total`` suffix on export.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from pipeline.errors import PermanentError, TransientError

# Seconds: a 1 s clip on a GPU finishes in tens of ms; a 3-hour file on a CPU takes an hour.
JOB_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RTF_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        # Ingestion (hot folder, S3 sources, API uploads).
        self.files_ingested = Counter(
            "ai2text_files_ingested",
            "Audio files accepted and queued for transcription",
            ["source"],
            registry=r,
        )
        self.files_rejected = Counter(
            "ai2text_files_rejected",
            "Input refused or quarantined, by a short reason code",
            ["source", "reason"],
            registry=r,
        )
        self.files_duplicate = Counter(
            "ai2text_files_duplicate",
            "Files whose content was already stored (not transcribed again)",
            ["source"],
            registry=r,
        )

        # The queue, sampled from PostgreSQL.
        self.queue_jobs = Gauge(
            "ai2text_queue_jobs", "Jobs by state, sampled from the database", ["state"], registry=r
        )
        self.queue_oldest_queued_seconds = Gauge(
            "ai2text_queue_oldest_queued_seconds",
            "Age of the oldest job waiting to be claimed (0 when none waits)",
            registry=r,
        )

        # ASR workers.
        self.jobs_finished = Counter(
            "ai2text_jobs_finished",
            "Jobs a worker finished handling, by outcome"
            " (done, duplicate, retry, failed, released, cancelled, lease_lost)",
            ["outcome"],
            registry=r,
        )
        self.job_seconds = Histogram(
            "ai2text_job_duration_seconds",
            "Wall time a worker spent on one job (fetch, decode, transcribe, store)",
            ["outcome"],
            buckets=JOB_SECONDS_BUCKETS,
            registry=r,
        )
        self.real_time_factor = Histogram(
            "ai2text_real_time_factor",
            "Transcription time divided by audio duration (lower is faster)",
            ["device"],
            buckets=RTF_BUCKETS,
            registry=r,
        )
        self.audio_transcribed_seconds = Counter(
            "ai2text_audio_transcribed_seconds",
            "Seconds of audio transcribed (divide by 3600 for hours)",
            registry=r,
        )
        self.audio_progress_seconds = Counter(
            "ai2text_audio_progress_seconds",
            "Seconds of audio transcribed, counted as running jobs report progress"
            " (rate() is live throughput; audio_transcribed counts finished jobs only)",
            registry=r,
        )
        self.transcripts = Counter(
            "ai2text_transcripts",
            "Transcripts stored, by verdict (ok, review)",
            ["verdict"],
            registry=r,
        )
        self.transcript_review_reasons = Counter(
            "ai2text_transcript_review_reasons",
            "Reasons transcripts were marked review, by kind (one transcript may have several)",
            ["reason"],
            registry=r,
        )
        self.worker_heartbeats = Counter(
            "ai2text_worker_heartbeats",
            "Worker heartbeats (every heartbeat interval, busy or idle; they refresh its row)",
            ["worker"],
            registry=r,
        )
        self.worker_last_heartbeat = Gauge(
            "ai2text_worker_last_heartbeat_timestamp_seconds",
            "Unix time of the worker's last heartbeat",
            ["worker"],
            registry=r,
        )
        self.gpu_memory_bytes = Gauge(
            "ai2text_gpu_memory_bytes",
            "GPU memory seen by the worker (kind = used, total)",
            ["device", "kind"],
            registry=r,
        )
        self.gpu_oom = Counter(
            "ai2text_gpu_out_of_memory",
            "CUDA out-of-memory errors (the job is retried, with a smaller batch)",
            ["device"],
            registry=r,
        )

        # Datasets and training.
        self.dataset_eligible_seconds = Gauge(
            "ai2text_dataset_eligible_audio_seconds",
            "Audio seconds eligible for the dataset now (divide by 3600 for hours)",
            ["dataset"],
            registry=r,
        )
        self.dataset_frozen_seconds = Gauge(
            "ai2text_dataset_frozen_audio_seconds",
            "Audio seconds in the newest frozen dataset version",
            ["dataset"],
            registry=r,
        )
        self.training_runs = Counter(
            "ai2text_training_runs", "Training runs launched, by outcome", ["outcome"], registry=r
        )

        # Dependencies.
        self.s3_errors = Counter(
            "ai2text_s3_errors",
            "Failed calls to S3 / object storage, by operation",
            ["operation"],
            registry=r,
        )
        self.db_errors = Counter(
            "ai2text_db_errors",
            "Database errors (connection lost, timeouts), by the component that saw them",
            ["component"],
            registry=r,
        )

        # Outbound deliveries from the event outbox (webhooks, transcript files).
        self.deliveries = Counter(
            "ai2text_deliveries",
            "Delivery attempts by target kind and outcome (delivered, retry, dead, lost)",
            ["kind", "outcome"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "ai2text_delivery_seconds",
            "Wall time of one delivery attempt, by target kind",
            ["kind"],
            registry=r,
        )

        # HTTP (gateway).
        self.http_requests = Counter(
            "ai2text_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "ai2text_http_request_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            registry=r,
        )

    @contextlib.contextmanager
    def s3_call(self, operation: str) -> Iterator[None]:
        """Count a failed object-storage call as ``ai2text_s3_errors_total{operation}``.

        The error (already translated into the ai2text tree) propagates unchanged.
        """
        try:
            yield
        except (TransientError, PermanentError):
            self.s3_errors.labels(operation).inc()
            raise

    def render(self) -> bytes:
        """The Prometheus text exposition of everything in this registry."""
        return generate_latest(self.registry)
