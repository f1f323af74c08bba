#!/usr/bin/env python
"""Worker memory while fetching one large object from a source bucket.

Run from the repository root:

    .venv/bin/python bench/s3_fetch_memory.py --size-mb 1024

A 16 kHz mono 16-bit WAV of low-level noise of ``--size-mb`` MiB is written to
a temp directory and multipart-uploaded (``--part-mb`` parts) to an in-process
moto S3 server. A fresh child process then runs the worker's fetch step,
``workers.fetch.fetch``, on it: stream the object pinned to its etag into a temp
file while hashing, decode all of it to validate it, and copy it into the
content-addressed store bucket (on the same moto server). The child reports its
peak RSS (``ru_maxrss``, cross-checked with ``VmHWM``):

- idle: after imports and set-up;
- warm: after fetching a 1 MiB object first (codecs, connection pools);
- peak: after fetching the large object.

Throughput is the object's size over the fetch's wall time (download + hash +
full decode + upload to the store), then over the validation (full decode) of
the local copy alone, then over a plain download into a hashing sink. moto
keeps every object in this process's memory, so the absolute speed is moto's
more than S3's; the memory figures are the child's alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from pathlib import Path
from typing import Any

import numpy as np
from minio import Minio
from moto.server import ThreadedMotoServer

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024

CHILD = r"""
import hashlib, json, resource, sys, time, uuid
from pathlib import Path

from pipeline.config import Settings
from pipeline.ingest.validation import validate
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
    validation={"max_duration_s": 1000 * 3600.0, "max_bytes": 1 << 40},
)
settings.temp_dir.mkdir(parents=True, exist_ok=True)
store = open_store(settings)
sources = SourceRegistry(settings)

def rss():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {
        "maxrss_kib": peak,
        "hwm_kib": int(fields["VmHWM"].split()[0]),
        "rss_kib": int(fields["VmRSS"].split()[0]),
    }

def run(key, etag):
    job = ClaimedJob(
        id=1, audio_id=uuid.uuid4(), attempt=1, max_attempts=1, lease_token=uuid.uuid4(),
        storage_key=None, original_name=key, duration_s=0.0, tenant="default",
        source_bucket=args["bucket"], source_key=key, source_etag=etag,
    )
    started = time.monotonic()
    fetched = fetch(job, settings=settings, store=store, sources=sources)
    return fetched, time.monotonic() - started

class Sink:
    def __init__(self):
        self.digest = hashlib.sha256()
    def write(self, data):
        self.digest.update(data)
        return len(data)

report = {"idle": rss()}
warm, _ = run(args["warm_key"], args["warm_etag"])
warm.path.unlink()
report["warm"] = rss()
fetched, seconds = run(args["key"], args["etag"])
report["peak"] = rss()
report.update(fetch_s=seconds, sha256=fetched.sha256, size=fetched.path.stat().st_size)
started = time.monotonic()
with open(fetched.path, "rb") as f:
    validate(f, name=args["key"], size=report["size"], settings=settings.validation)
report["validate_s"] = time.monotonic() - started
fetched.path.unlink()
sink = Sink()
started = time.monotonic()
sources.bucket(args["bucket"]).download(args["key"], sink, etag=args["etag"])
report["download_s"] = time.monotonic() - started
report["download_sha256"] = sink.digest.hexdigest()
report["after_download"] = rss()
print(json.dumps(report))
"""


def write_noise_wav(path: Path, data_bytes: int) -> str:
    """16 kHz mono 16-bit noise, a MiB at a time; return the file's sha256."""
    rng = np.random.default_rng(7)
    digest = hashlib.sha256()
    left = data_bytes // 2
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        while left:
            n = min(left, MiB // 2)
            w.writeframes(rng.integers(-300, 300, n, dtype="<i2").tobytes())
            left -= n
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def run_child(args: dict[str, Any]) -> dict[str, Any]:
    # Through sh, which forks the child: exec'd straight from this process, the child
    # would start with ru_maxrss at this process's peak (moto's objects live here).
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI2TEXT_")}
    done = subprocess.run(
        ["/bin/sh", "-c", '"$0" "$@"; exit $?', sys.executable, "-c", CHILD, json.dumps(args)],
        env=env,
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"fetch child failed ({done.returncode}):\n{done.stderr.decode()[-4000:]}")
    report: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="object size in MiB")
    parser.add_argument("--part-mb", type=int, default=16, help="multipart part size in MiB")
    args = parser.parse_args()

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"{host}:{port}"
        with tempfile.TemporaryDirectory(prefix="ai2text-fetch-bench-") as tmp:
            root = Path(tmp)
            big, small = root / "big.wav", root / "warm.wav"
            started = time.monotonic()
            sha = write_noise_wav(big, args.size_mb * MiB)
            write_noise_wav(small, MiB)
            size = big.stat().st_size
            print(f"wrote {size / MiB:.0f} MiB WAV in {time.monotonic() - started:.1f} s")

            client = Minio(endpoint, access_key="testing", secret_key="testing", secure=False)
            bucket, store = f"uploads-{uuid.uuid4().hex[:8]}", f"store-{uuid.uuid4().hex[:8]}"
            client.make_bucket(bucket)
            started = time.monotonic()
            big_obj = client.fput_object(bucket, "big.wav", str(big), part_size=args.part_mb * MiB)
            warm_obj = client.fput_object(bucket, "warm.wav", str(small))
            print(
                f"uploaded (multipart, etag {big_obj.etag}) in {time.monotonic() - started:.1f} s"
            )

            report = run_child(
                {
                    "endpoint": endpoint,
                    "bucket": bucket,
                    "store": store,
                    "data_dir": str(root / "data"),
                    "key": "big.wav",
                    "etag": str(big_obj.etag).strip('"'),
                    "warm_key": "warm.wav",
                    "warm_etag": str(warm_obj.etag).strip('"'),
                }
            )
    finally:
        server.stop()

    if report["sha256"] != sha or report["download_sha256"] != sha or report["size"] != size:
        sys.exit("fetched bytes differ from the uploaded file")

    def mib(kib: int) -> str:
        return f"{kib / 1024:.0f} MiB"

    idle, warm, peak = report["idle"], report["warm"], report["peak"]
    growth = peak["maxrss_kib"] - warm["maxrss_kib"]
    print(f"object:            {size / MiB:.0f} MiB, sha256 verified")
    print(f"idle RSS:          {mib(idle['rss_kib'])} (peak so far {mib(idle['maxrss_kib'])})")
    print(f"after warm-up:     peak {mib(warm['maxrss_kib'])}")
    print(
        f"peak RSS:          {mib(peak['maxrss_kib'])} (VmHWM {mib(peak['hwm_kib'])}),"
        f" +{growth / 1024:.1f} MiB over warm-up,"
        f" +{(peak['maxrss_kib'] - idle['maxrss_kib']) / 1024:.1f} MiB over idle"
    )
    print(
        f"fetch throughput:  {size / MiB / report['fetch_s']:.0f} MiB/s"
        f" ({report['fetch_s']:.1f} s: download + sha256 + full decode + store upload)"
    )
    print(
        f"validation only:   {size / MiB / report['validate_s']:.0f} MiB/s"
        f" ({report['validate_s']:.1f} s: full decode of the local file)"
    )
    print(
        f"download only:     {size / MiB / report['download_s']:.0f} MiB/s"
        f" ({report['download_s']:.1f} s into a hashing sink)"
    )
    print(json.dumps({"size_bytes": size, **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
