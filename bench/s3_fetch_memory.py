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
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

from minio import Minio
from moto.server import ThreadedMotoServer

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fetch_probe import MiB, run_fetch_probe, write_noise_wav  # noqa: E402


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

            report = run_fetch_probe(
                {
                    "endpoint": endpoint,
                    "bucket": bucket,
                    "store": store,
                    "data_dir": str(root / "data"),
                    "key": "big.wav",
                    "etag": str(big_obj.etag).strip('"'),
                    "warm_key": "warm.wav",
                    "warm_etag": str(warm_obj.etag).strip('"'),
                    "validation": {"max_duration_s": 1000 * 3600.0, "max_bytes": 1 << 40},
                    "stages": True,
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
