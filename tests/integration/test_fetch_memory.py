"""A worker fetches a large multipart object from a source bucket in bounded memory.

``workers.fetch.fetch`` streams the object (pinned to its etag) into a temp file
while hashing it, validates all of it, and copies it into the content-addressed
store. It runs here in a child process that reports its peak RSS, so the moto
server (which keeps every object in this process's memory) does not count.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from minio import Minio

from tests.fetch_probe import MiB, run_fetch_probe, sha256_of, write_noise_wav

REPO = Path(__file__).resolve().parents[2]
LIMIT = 64 * MiB
SIZE = 100 * MiB
PART = 16 * MiB

pytestmark = pytest.mark.slow


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
    report = run_fetch_probe(
        {
            "endpoint": moto_endpoint,
            "bucket": bucket,
            "store": store,
            "data_dir": str(tmp_path / "data"),
            "key": "long.wav",
            "etag": etag,
            "warm_key": "warm.wav",
            "warm_etag": str(warm.etag).strip('"'),
            "validation": {"max_duration_s": 48 * 3600.0},
        },
        timeout=240,
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
    assert abs(report["idle"]["maxrss_kib"] - report["idle"]["hwm_kib"]) < 16 * 1024, report
    assert abs(report["peak"]["maxrss_kib"] - report["peak"]["hwm_kib"]) < 16 * 1024, report
    growth = (report["peak"]["maxrss_kib"] - report["warm"]["maxrss_kib"]) * 1024
    from_idle = (report["peak"]["maxrss_kib"] - report["idle"]["maxrss_kib"]) * 1024
    summary = (
        f"fetch of {size / MiB:.0f} MiB: idle {report['idle']['maxrss_kib'] / 1024:.0f} MiB,"
        f" after warm-up {report['warm']['maxrss_kib'] / 1024:.0f} MiB,"
        f" peak {report['peak']['maxrss_kib'] / 1024:.0f} MiB, growth {growth / MiB:.1f} MiB"
        f" ({from_idle / MiB:.1f} MiB from idle), {size / MiB / report['fetch_s']:.0f} MiB/s"
    )
    sys.stderr.write(summary + "\n")  # shown with -s
    assert growth < LIMIT, summary
    assert from_idle < LIMIT, summary
