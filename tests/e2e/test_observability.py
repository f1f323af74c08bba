"""Metrics, probes and logs of real ``ai2text`` processes, read the way an operator would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import public_tempdir
from tests.e2e.harness import REPO, Service, cli_text, wait_until
from tests.e2e.test_up import embedded_env

DATA = Path(__file__).resolve().parents[1] / "data"

pytestmark = pytest.mark.slow


def scrape(url: str, headers: dict[str, str] | None = None) -> dict[str, float]:
    """Every sample at ``url`` as ``name{label="value",...}`` (labels sorted) -> value."""
    response = httpx.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return samples


def wait_for_samples(url: str, expected: dict[str, float], *, timeout: float) -> dict[str, float]:
    """Scrape until every expected sample has its value; fail with the last scrape."""
    last: dict[str, float] = {}

    def check() -> dict[str, float] | None:
        nonlocal last
        last = scrape(url)
        return last if all(last.get(k) == v for k, v in expected.items()) else None

    try:
        return wait_until(check, timeout=timeout, what=f"metrics {expected}")
    except AssertionError:
        got = {k: last.get(k) for k in expected}
        raise AssertionError(f"metrics never reached {expected}; last scrape: {got}") from None


def test_watch_process_serves_its_ingest_and_rejection_metrics_on_its_ops_port(
    database_url: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    env = {
        "AI2TEXT_DATABASE__URL": database_url,
        "AI2TEXT_DATA_DIR": str(tmp_path / "data"),
        "AI2TEXT_WATCH__INBOX": str(inbox),
        "AI2TEXT_WATCH__QUIET_PERIOD_S": "0.5",
        "AI2TEXT_WATCH__MIN_FREE_BYTES": "0",
        "AI2TEXT_METRICS__PORT": "0",
        "AI2TEXT_METRICS__QUEUE_SAMPLE_INTERVAL_S": "0.2",
    }
    service = Service("watch", env, tmp_path / "watch.log").start()
    try:
        base = service.wait_for_event("metrics listening", timeout=60)["url"]
        service.wait_for_event("watching", timeout=60)
        ready = wait_until(
            lambda: httpx.get(f"{base}/readyz", timeout=10).status_code == 200,
            timeout=30,
            what="/readyz 200",
        )
        assert ready
        health = httpx.get(f"{base}/healthz", timeout=10)
        assert (health.status_code, health.json()) == (200, {"status": "ok"})

        shutil.copy(DATA / "jfk.flac", inbox / "jfk.flac")
        (inbox / "notes.wav").write_text("not audio at all, just a text file named .wav\n")

        samples = wait_for_samples(
            f"{base}/metrics",
            {
                'ai2text_files_ingested_total{source="folder"}': 1,
                'ai2text_files_rejected_total{reason="not_audio",source="folder"}': 1,
            },
            timeout=60,
        )
        # Database-wide gauges are the gateway's and orchestrator's to sample, not a watcher's.
        # (the unlabelled oldest-queued gauge exists in every registry, never set here).
        assert not [k for k in samples if k.startswith(("ai2text_queue_jobs{", "ai2text_dataset_"))]
        assert samples["ai2text_queue_oldest_queued_seconds{}"] == 0
        rejected = [k for k, v in samples.items() if k.startswith("ai2text_files_rejected_total{")]
        assert rejected == ['ai2text_files_rejected_total{reason="not_audio",source="folder"}']
        # No worker runs here: nothing was transcribed.
        assert not [k for k in samples if k.startswith("ai2text_jobs_finished_total{")]
        assert samples["ai2text_queue_oldest_queued_seconds{}"] >= 0

        ingested = service.wait_for_event("ingested")
        refused = service.wait_for_event("rejected")
        assert ingested["audio_id"] != refused["audio_id"]
        assert refused["code"] == "not_audio" and "FFmpeg" in refused["reason"]
    finally:
        assert service.stop() == 0


@dataclass
class Process:
    """One ``ai2text`` process with stdout and stderr captured to separate files."""

    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def lines(self) -> list[str]:
        return self.stderr.read_text(errors="replace").splitlines()

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.lines():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return found

    def event(self, name: str, timeout: float) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {self.lines()[-20:]}")
            return next((e for e in self.events() if e.get("event") == name), None)

        return wait_until(find, timeout=timeout, what=f"event {name!r}")


@pytest.fixture
def json_up() -> Iterator[tuple[Process, dict[str, str], Path]]:
    root = public_tempdir("ai2text-json-up-")
    env = embedded_env(root)
    env.pop("AI2TEXT_DATABASE__URL")
    env |= {"AI2TEXT_LOG_FORMAT": "json", "AI2TEXT_METRICS__PORT": "0"}
    env["AI2TEXT_METRICS__QUEUE_SAMPLE_INTERVAL_S"] = "0.2"
    full_env = {k: v for k, v in os.environ.items() if k != "AI2TEXT_DATABASE__URL"}
    full_env |= env | {"PYTHONUNBUFFERED": "1"}
    stdout, stderr = root / "stdout.txt", root / "stderr.txt"
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ai2text", "up"],
            env=full_env,
            stdout=out,
            stderr=err,
            cwd=REPO,
        )
    process = Process(proc, stdout, stderr)
    try:
        yield process, env, root / "inbox"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            shutil.rmtree(root, ignore_errors=True)


def test_up_with_json_logs_writes_only_json_and_ties_ingest_to_transcript_by_ids(
    json_up: tuple[Process, dict[str, str], Path],
) -> None:
    process, env, inbox = json_up
    ops = process.event("metrics listening", timeout=120)["url"]
    gateway = process.event("gateway listening", timeout=120)["url"]
    process.event("worker ready", timeout=180)
    process.event("watching", timeout=60)

    shutil.copy(DATA / "jfk.flac", inbox / "jfk.flac")
    transcribed = process.event("transcribed", timeout=180)
    ingested = next(e for e in process.events() if e.get("event") == "ingested")
    assert ingested["audio_id"] == transcribed["audio_id"]
    assert isinstance(transcribed["job_id"], int)
    assert ingested["file"] == transcribed["file"] == "jfk.flac"

    # Every role's metrics in one registry: the ops port and the gateway serve the same.
    expected = {
        'ai2text_files_ingested_total{source="folder"}': 1,
        'ai2text_queue_jobs{state="done"}': 1,
        'ai2text_queue_jobs{state="queued"}': 0,
    }
    samples = wait_for_samples(f"{ops}/metrics", expected, timeout=60)
    assert samples["ai2text_audio_transcribed_seconds_total{}"] == pytest.approx(11.0, abs=0.2)
    admin = cli_text(env, "token", "--scope", "admin").strip()
    via_gateway = scrape(f"{gateway}/metrics", {"Authorization": f"Bearer {admin}"})
    for name, wanted in expected.items():
        assert via_gateway[name] == wanted, name
    assert via_gateway["ai2text_audio_transcribed_seconds_total{}"] == pytest.approx(11.0, abs=0.2)

    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(timeout=60) == 0
    lines = process.lines()
    assert any(json.loads(line).get("event") == "stopped" for line in lines)
    not_json = []
    for line in lines:
        try:
            assert isinstance(json.loads(line), dict)
        except (json.JSONDecodeError, AssertionError):
            not_json.append(line)
    assert not_json == [], not_json[:10]
    assert process.stdout.read_text() == ""
