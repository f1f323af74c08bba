"""A worker fetches a large multipart object from a source bucket in bounded memory.

``workers.fetch.fetch`` streams the object (pinned to its etag) into a temp file
while hashing it, validates all of it, and copies it into the content-addressed
store. It runs here in a child process that reports its peak RSS, so the moto
server (which keeps every object in this process's memory) does not count.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from minio import Minio

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
LIMIT = 64 * MiB
SIZE = 100 * MiB
PART = 16 * MiB

pytestmark = pytest.mark.slow

# Runs in a fresh interpreter: argv[1] is a JSON object with the connection, the
# objects to fetch and a data directory; prints one JSON line with peak RSS (KiB).
CHILD = r"""
import json, resource, sys, time, uuid
from pathlib import Path

from pipeline.config import Settings
from pipeline.queue import ClaimedJob
from pipeline.sources.registry import SourceRegistry
from pipeline.storage import open_store
from workers.fetch import fetch

args = json.loads(sys.argv[1])
settings = Settings(
    data_dir=Path(args["data_dir"]),
    storage={
        "endpoint": args["endpoint"], "access_key": "testing", "secret_key": "testing",
        "secure": False, "bucket": args["store"],
    },
    s3_sources=[{"bucket": args["bucket"]}],
    validation={"max_duration_s": 48 * 3600.0},
)
settings.temp_dir.mkdir(parents=True, exist_ok=True)
store = open_store(settings)
sources = SourceRegistry(settings)

def peak_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

def hwm_kib():  # the same peak as the kernel keeps it for this address space
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1])

def run(key, etag):
    job = ClaimedJob(
        id=1, audio_id=uuid.uuid4(), attempt=1, max_attempts=1, lease_token=uuid.uuid4(),
        storage_key=None, original_name=key, duration_s=0.0, tenant="default",
        source_bucket=args["bucket"], source_key=key, source_etag=etag,
    )
    started = time.monotonic()
    fetched = fetch(job, settings=settings, store=store, sources=sources)
    return fetched, time.monotonic() - started

report = {"idle_kib": peak_kib(), "idle_hwm_kib": hwm_kib()}
warm, _ = run(args["warm_key"], args["warm_etag"])  # first use: codecs, pools, imports
warm.path.unlink()
report["warm_kib"] = peak_kib()
fetched, seconds = run(args["key"], args["etag"])
report.update(
    peak_kib=peak_kib(), peak_hwm_kib=hwm_kib(), seconds=seconds, path=str(fetched.path),
    sha256=fetched.sha256, storage_key=fetched.storage_key, duration_s=fetched.info.duration_s,
)
print(json.dumps(report))
"""


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


def run_child(args: dict[str, Any]) -> dict[str, Any]:
    """Run CHILD; return its report.

    Through ``sh``, which forks it: a process exec'd straight from this one (fork or
    vfork, then exec) starts with ``ru_maxrss`` already at this process's peak RSS,
    which moto's in-memory objects make hundreds of MiB, and would hide any growth.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI2TEXT_")}
    done = subprocess.run(
        ["/bin/sh", "-c", '"$0" "$@"; exit $?', sys.executable, "-c", CHILD, json.dumps(args)],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    report: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return report


def test_large_multipart_object_is_fetched_in_bounded_memory(
    tmp_path: Path, moto_endpoint: str
) -> None:
    big = tmp_path / "long.wav"
    small = tmp_path / "warm.wav"
    sha = write_noise_wav(big, SIZE)
    write_noise_wav(small, MiB)
    size = big.stat().st_size
    assert size > LIMIT

    client = Minio(moto_endpoint, access_key="testing", secret_key="testing", secure=False)
    bucket = f"uploads-{uuid.uuid4().hex[:12]}"
    client.make_bucket(bucket)
    uploaded = client.fput_object(bucket, "long.wav", str(big), part_size=PART)
    warm = client.fput_object(bucket, "warm.wav", str(small))
    etag = str(uploaded.etag).strip('"')
    assert etag.endswith(f"-{-(-size // PART)}"), etag  # multipart: "<md5>-<parts>"

    store = f"store-{uuid.uuid4().hex[:12]}"
    report = run_child(
        {
            "endpoint": moto_endpoint,
            "bucket": bucket,
            "store": store,
            "data_dir": str(tmp_path / "data"),
            "key": "long.wav",
            "etag": etag,
            "warm_key": "warm.wav",
            "warm_etag": str(warm.etag).strip('"'),
        }
    )
    fetched = Path(report["path"])
    try:
        assert report["sha256"] == sha
        assert fetched.stat().st_size == size
        assert sha256_of(fetched) == sha
    finally:
        fetched.unlink(missing_ok=True)
    assert report["duration_s"] == pytest.approx((size - 44) / 32000, abs=0.1)
    # ...and a content-addressed copy of it is in the store.
    assert report["storage_key"].endswith(f"{sha}.wav")
    assert client.stat_object(store, report["storage_key"]).size == size

    # ru_maxrss must be this process's own: no parent's peak inherited through exec.
    assert abs(report["idle_kib"] - report["idle_hwm_kib"]) < 16 * 1024, report
    assert abs(report["peak_kib"] - report["peak_hwm_kib"]) < 16 * 1024, report
    growth = (report["peak_kib"] - report["warm_kib"]) * 1024
    from_idle = (report["peak_kib"] - report["idle_kib"]) * 1024
    summary = (
        f"fetch of {size / MiB:.0f} MiB: idle {report['idle_kib'] / 1024:.0f} MiB,"
        f" after warm-up {report['warm_kib'] / 1024:.0f} MiB,"
        f" peak {report['peak_kib'] / 1024:.0f} MiB, growth {growth / MiB:.1f} MiB"
        f" ({from_idle / MiB:.1f} MiB from idle), {size / MiB / report['seconds']:.0f} MiB/s"
    )
    sys.stderr.write(summary + "\n")  # shown with -s
    assert growth < LIMIT, summary
    assert from_idle < LIMIT, summary
