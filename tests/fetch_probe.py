"""The worker's fetch step in a fresh process, reporting its memory (test and benchmark).

``run_fetch_probe(args)`` runs ``python -m tests.fetch_probe ARGS`` and returns its
JSON report. ``ARGS`` names the S3 endpoint, the source bucket, the store bucket, a
data directory, a small object to warm up with and the object to measure
(``key``/``etag``), and optionally ``validation`` settings and ``stages`` (also time
a validation of the fetched copy and a plain download into a hashing sink).

The report has ``idle``, ``warm`` and ``peak`` memory readings (``maxrss_kib``,
``hwm_kib``, ``rss_kib``) and ``fetch_s``, ``path``, ``sha256``, ``storage_key``,
``duration_s``, ``size``; with ``stages`` also ``validate_s``, ``download_s``,
``download_sha256`` and ``after_download``.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import time
import uuid
import wave
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


def write_noise_wav(path: Path, data_bytes: int, *, rate: int = 16000, channels: int = 1) -> str:
    """Low-level noise as 16-bit PCM, written a chunk at a time; return the file's sha256."""
    rng = np.random.default_rng(7)
    frame = 2 * channels
    left = data_bytes // frame
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        while left:
            n = min(left, MiB // frame)
            w.writeframes(rng.integers(-300, 300, n * channels, dtype="<i2").tobytes())
            left -= n
    return sha256_of(path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def run_fetch_probe(args: dict[str, Any], *, timeout: float = 600) -> dict[str, Any]:
    """Run the probe in a child process; return its report (raises if it failed).

    Through ``sh``, which forks it: a process exec'd straight from this one starts
    with ``ru_maxrss`` already at this process's peak RSS, which moto's in-memory
    objects make hundreds of MiB, and would hide any growth.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI2TEXT_")}
    command = [sys.executable, "-m", "tests.fetch_probe", json.dumps(args)]
    done = subprocess.run(
        ["/bin/sh", "-c", '"$0" "$@"; exit $?', *command],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"fetch probe failed ({done.returncode}):\n{done.stderr.decode()[-4000:]}"
        )
    report: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return report


def _memory() -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "hwm_kib": int(fields["VmHWM"].split()[0]),
        "rss_kib": int(fields["VmRSS"].split()[0]),
    }


class _HashingSink:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)


def main() -> None:
    from pipeline.config import Settings
    from pipeline.db.jobs import ClaimedJob
    from pipeline.ingest.validation import validate
    from pipeline.sources.registry import SourceRegistry
    from pipeline.storage import open_store
    from workers.fetch import fetch

    args = json.loads(sys.argv[1])
    settings = Settings(
        data_dir=Path(args["data_dir"]),
        storage={
            "endpoint": args["endpoint"],
            "access_key": "testing",
            "secret_key": "testing",
            "secure": False,
            "bucket": args["store"],
        },
        s3_sources=[{"bucket": args["bucket"]}],
        validation=args.get("validation", {}),
    )
    settings.temp_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.storage, settings.data_dir)
    sources = SourceRegistry(
        settings.s3_sources,
        storage=settings.storage,
        allowed_extensions=settings.validation.allowed_extensions,
    )

    def timed_fetch(key: str, etag: str) -> tuple[Any, float]:
        job = ClaimedJob(
            id=1, audio_id=uuid.uuid4(), attempt=1, max_attempts=1, lease_token=uuid.uuid4(),
            storage_key=None, original_name=key, duration_s=0.0, tenant="default",
            source_bucket=args["bucket"], source_key=key, source_etag=etag,
        )  # fmt: skip
        started = time.monotonic()
        fetched = fetch(
            job,
            validation=settings.validation,
            temp_dir=settings.temp_dir,
            store=store,
            sources=sources,
        )
        return fetched, time.monotonic() - started

    report: dict[str, Any] = {"idle": _memory()}
    warm, _ = timed_fetch(args["warm_key"], args["warm_etag"])  # codecs, pools, imports
    warm.path.unlink()
    report["warm"] = _memory()
    fetched, seconds = timed_fetch(args["key"], args["etag"])
    report["peak"] = _memory()
    report.update(
        fetch_s=seconds,
        path=str(fetched.path),
        sha256=fetched.sha256,
        storage_key=fetched.storage_key,
        duration_s=fetched.info.duration_s,
        size=fetched.path.stat().st_size,
    )
    if args.get("stages"):
        started = time.monotonic()
        with open(fetched.path, "rb") as f:
            validate(f, name=args["key"], size=report["size"], settings=settings.validation)
        report["validate_s"] = time.monotonic() - started
        fetched.path.unlink()
        sink = _HashingSink()
        started = time.monotonic()
        sources.bucket(args["bucket"]).download(args["key"], sink, etag=args["etag"])
        report["download_s"] = time.monotonic() - started
        report["download_sha256"] = sink.digest.hexdigest()
        report["after_download"] = _memory()
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
