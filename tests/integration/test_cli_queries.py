"""``ai2text search``, ``retry``, ``ls`` filters, id prefixes and ``--json`` times.

Audio goes in through the real ingest and a real ``AsrWorker`` on real PostgreSQL;
only the model is scripted (each upload's ``prompt`` picks what it "hears", and one
breaks for good, so its job is dead). Every command runs as ``python -m ai2text`` in
a child process, and its ``--json`` is compared with what a real ``ai2text gateway``
answers for the same rows.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from pipeline.config import Settings
from pipeline.errors import PermanentError
from pipeline.ingest.core import Arrival
from pipeline.storage import FilesystemStore
from tests.components import ingestor_of, opened, worker_of
from tests.e2e.gateway_harness import (
    READ,
    Gateway,
    Signer,
    bearer,
    new_rsa_key,
    public_pem,
    start_gateway,
    unique_silence,
)
from tests.e2e.harness import REPO
from tests.waiting import jobs_settled
from workers.transcription import Segment, TranscribeOptions, Transcription

pytestmark = pytest.mark.slow

HEARD = {
    "kitchen": [
        (0.5, 4.5, "The quick brown fox jumps over the lazy dog."),
        (65.0, 69.5, "Pelicans eat fish at noon in the harbour."),
    ],
    "garden": [(1.0, 5.0, "Tomatoes grow well in the garden when the fox stays away.")],
}
BROKEN = "broken"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


class ScriptedModel:
    """A ``Transcriber`` that says what ``HEARD`` holds for the upload; ``broken`` fails."""

    model_name = "scripted"
    device = "cpu"
    compute_type = "none"
    batch_size = 1
    device_label = "cpu"

    def load(self) -> None:
        pass

    def transcribe(
        self, audio_path: Path, cancel: threading.Event, options: TranscribeOptions | None = None
    ) -> Transcription:
        assert options is not None and options.prompt is not None
        if options.prompt == BROKEN:
            raise PermanentError("the scripted model cannot read this file")
        segments = [
            Segment(start=a, end=b, text=text, avg_logprob=-0.2, no_speech_prob=0.01)
            for a, b, text in HEARD[options.prompt]
        ]
        return Transcription(
            language="en",
            language_probability=0.98,
            audio_duration_s=70.0,
            processing_s=0.5,
            segments=segments,
        )


@dataclass
class Scene:
    settings: Settings
    database_url: str
    ids: dict[str, uuid.UUID] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        kept = {k: v for k, v in os.environ.items() if not k.startswith("AI2TEXT_")}
        return kept | {
            "AI2TEXT_DATABASE__URL": self.database_url,
            "AI2TEXT_DATA_DIR": str(self.settings.data_dir),
        }

    def name_of(self, audio_id: Any) -> str:
        return next(k for k, v in self.ids.items() if str(v) == str(audio_id))


@pytest.fixture(scope="module")
def scene(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Scene:
    root = tmp_path_factory.mktemp("cli-queries")
    settings = Settings(
        data_dir=root / "data",
        database={"url": module_database_url},
        watch={"inbox": root / "inbox", "min_free_bytes": 0},
        queue={"lease_s": 10, "poll_interval_s": 0.5},
        asr={"model": "scripted/model"},
    )
    built = Scene(settings, module_database_url)
    asyncio.run(_transcribe_all(built))
    return built


async def _transcribe_all(scene: Scene) -> None:
    store = FilesystemStore(scene.settings.data_dir / "objects")
    async with opened(scene.settings) as database:
        ingestor = ingestor_of(scene.settings, database, store)
        for name in [*HEARD, BROKEN]:
            data = unique_silence(1.0)
            arrival = Arrival("upload", f"{name}.wav", f"upload://test/{name}", None, "default")
            result = await ingestor.ingest(
                arrival, io.BytesIO(data), len(data), options={"prompt": name}
            )
            assert result.outcome == "accepted", result
            scene.ids[name] = result.audio_id
        stop = asyncio.Event()
        worker = worker_of(scene.settings, database, store, ScriptedModel())
        task = asyncio.create_task(worker.run(stop))
        try:
            await jobs_settled(scene.settings, timeout=60, at_least=3, watch=[task])
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


@pytest.fixture
def db(scene: Scene) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(scene.database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def ai2text(scene: Scene, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ai2text", *args],
        env=scene.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok_json(scene: Scene, *args: str) -> Any:
    done = ai2text(scene, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def names(rows: list[dict[str, Any]], scene: Scene) -> set[str]:
    return {scene.name_of(r["id"]) for r in rows}


# -- search ------------------------------------------------------------------------------


def test_search_prints_the_audio_the_time_and_the_snippet(scene: Scene) -> None:
    done = ai2text(scene, "search", "pelicans")

    assert done.returncode == 0, done.stderr
    header, line, *rest = done.stdout.splitlines()
    assert header.split() == ["ID", "TIME", "NAME", "MATCH"]
    assert rest == []
    assert line.startswith(str(scene.ids["kitchen"])[:8] + "  ")
    assert "1:05.0" in line and "kitchen.wav" in line
    assert "[Pelicans] eat fish at noon" in line  # not a terminal: the match in brackets


def test_search_json_and_limit(scene: Scene) -> None:
    rows = ok_json(scene, "search", "fox")
    assert {scene.name_of(r["audio_id"]) for r in rows} == {"kitchen", "garden"}
    assert all("<mark>fox</mark>" in r["snippet"] for r in rows)

    assert len(ok_json(scene, "search", "fox", "-n", "1")) == 1
    assert len(ok_json(scene, "search", "fox", "--limit", "1")) == 1


def test_search_without_matches_says_so_and_succeeds(scene: Scene) -> None:
    done = ai2text(scene, "search", "zeppelin")

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == []
    assert "no transcript says 'zeppelin'" in done.stderr


def test_an_empty_search_is_refused_with_one_line(scene: Scene) -> None:
    done = ai2text(scene, "search", "  ")

    assert done.returncode == 2
    assert done.stderr == "ai2text: the search query must be 1 to 500 characters\n"


# -- ls filters ----------------------------------------------------------------------------


def test_ls_filters_by_state_one_repeated_or_a_comma_list(scene: Scene) -> None:
    assert names(ok_json(scene, "ls", "--state", "failed"), scene) == {BROKEN}
    assert names(ok_json(scene, "ls", "--state", "transcribed"), scene) == set(HEARD)
    assert names(ok_json(scene, "ls", "--state", "failed,transcribed"), scene) == set(scene.ids)
    both = ok_json(scene, "ls", "--state", "failed", "--state", "transcribed")
    assert names(both, scene) == set(scene.ids)
    assert ok_json(scene, "ls", "--state", "queued") == []


def test_ls_filters_by_time_relative_or_iso(scene: Scene) -> None:
    assert names(ok_json(scene, "ls", "--since", "2h"), scene) == set(scene.ids)
    assert ok_json(scene, "ls", "--since", "2999-01-01") == []
    assert names(ok_json(scene, "ls", "--since", "2000-01-01T00:00+00:00"), scene) == set(scene.ids)
    assert ok_json(scene, "ls", "--until", "3d") == []
    failed_lately = ok_json(scene, "ls", "--since", "1d", "--state", "failed")
    assert names(failed_lately, scene) == {BROKEN}


def test_ls_refuses_an_unknown_state_naming_the_known_ones(scene: Scene) -> None:
    done = ai2text(scene, "ls", "--state", "done")

    assert done.returncode == 2
    assert "unknown state done; one of queued, processing, transcribed, failed" in done.stderr


# -- ids ----------------------------------------------------------------------------------------


def test_an_ambiguous_prefix_lists_the_audio_it_matches(make_settings: Any) -> None:
    settings = make_settings()
    ids = asyncio.run(_ingest_only(settings, 17))  # 17 ids: two share a first hex digit
    firsts = [str(i)[0] for i in ids]
    prefix = next(c for c in firsts if firsts.count(c) > 1)
    matching = sorted(f"{i} (file-{n}.wav)" for n, i in enumerate(ids) if str(i).startswith(prefix))
    assert settings.database.url is not None
    scene = Scene(settings, settings.database.url.get_secret_value())

    # To retry, digits are a job id first (jobs 1 to 17 exist here).
    for command in ("show",) if prefix.isdigit() else ("show", "retry"):
        done = ai2text(scene, command, prefix)

        assert done.returncode == 1, (command, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(f"ai2text: id prefix {prefix} is ambiguous: "), done.stderr
        for match in matching[:5]:
            assert match in done.stderr, done.stderr


async def _ingest_only(settings: Settings, count: int) -> list[uuid.UUID]:
    store = FilesystemStore(settings.data_dir / "objects")
    ids = []
    async with opened(settings) as database:
        ingestor = ingestor_of(settings, database, store)
        for n in range(count):
            data = unique_silence(0.2)
            arrival = Arrival("upload", f"file-{n}.wav", f"upload://test/{n}", None, "default")
            result = await ingestor.ingest(arrival, io.BytesIO(data), len(data))
            assert result.outcome == "accepted", result
            ids.append(result.audio_id)
    return ids


# -- retry --------------------------------------------------------------------------------------


def test_retry_puts_a_dead_job_back_by_audio_prefix(
    scene: Scene, db: psycopg.Connection[dict[str, Any]]
) -> None:
    audio_id = scene.ids[BROKEN]
    job = db.execute("SELECT id, state FROM jobs WHERE audio_id = %s", (audio_id,)).fetchone()
    assert job is not None and job["state"] == "dead"

    done = ai2text(scene, "retry", str(audio_id)[:13])

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"job {job['id']} queued again (broken.wav, audio {audio_id})")
    assert "it was dead: the scripted model cannot read this file" in done.stdout
    after = db.execute(
        "SELECT j.state, j.attempts, a.state AS audio_state FROM jobs j"
        " JOIN audio a ON a.id = j.audio_id WHERE j.id = %s",
        (job["id"],),
    ).fetchone()
    assert after == {"state": "queued", "attempts": 0, "audio_state": "queued"}

    # Dead again (as the worker would leave it) and retried by its job id, as JSON.
    db.execute("UPDATE jobs SET state = 'dead' WHERE id = %s", (job["id"],))
    db.execute("UPDATE audio SET state = 'failed' WHERE id = %s", (audio_id,))
    retried = ok_json(scene, "retry", str(job["id"]))
    assert retried == {"id": job["id"], "audio_id": str(audio_id), "state": "queued"}
    db.execute("UPDATE jobs SET state = 'dead' WHERE id = %s", (job["id"],))
    db.execute("UPDATE audio SET state = 'failed' WHERE id = %s", (audio_id,))


def test_retry_of_a_done_job_says_it_is_not_dead_or_failed(
    scene: Scene, db: psycopg.Connection[dict[str, Any]]
) -> None:
    audio_id = scene.ids["kitchen"]
    job = db.execute("SELECT id FROM jobs WHERE audio_id = %s", (audio_id,)).fetchone()
    assert job is not None

    done = ai2text(scene, "retry", str(audio_id))

    assert done.returncode == 1
    assert done.stderr == (
        f"ai2text: job {job['id']} (kitchen.wav, audio {audio_id}) is done;"
        " only dead or failed jobs can be retried\n"
    )


def test_retry_of_nothing_names_what_it_looked_for(scene: Scene) -> None:
    done = ai2text(scene, "retry", "987654321")

    assert done.returncode == 1
    assert done.stderr == "ai2text: no job or audio with id 987654321\n"


# -- the same JSON as the API ---------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(scene: Scene, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("cli-gateway")
    key = new_rsa_key()
    pem = root / "jwt-public.pem"
    pem.write_bytes(public_pem(key))
    started = start_gateway(
        "gateway",
        root,
        scene.database_url,
        Signer(key),
        {"AI2TEXT_AUTH__PUBLIC_KEY_FILE": str(pem)},
    )
    try:
        yield started
    finally:
        started.service.stop()


def test_json_times_and_rows_are_the_apis(scene: Scene, gateway: Gateway) -> None:
    token = gateway.signer.token(*READ)
    with gateway.client() as http:
        listed = http.get("/v1/audio", params={"state": "transcribed"}, headers=bearer(token))
        found = http.get("/v1/search", params={"q": "fox"}, headers=bearer(token))
        shown = http.get(f"/v1/audio/{scene.ids['garden']}", headers=bearer(token))
        transcript = http.get(f"/v1/audio/{scene.ids['garden']}/transcript", headers=bearer(token))
    assert listed.status_code == found.status_code == shown.status_code == 200
    assert transcript.status_code == 200

    from_cli = ok_json(scene, "ls", "--state", "transcribed")
    assert from_cli == listed.json()["items"]
    assert all(ISO.match(r["created_at"]) for r in from_cli)
    assert ok_json(scene, "search", "fox") == found.json()["items"]
    show = ok_json(scene, "show", str(scene.ids["garden"]))
    assert show["audio"] == shown.json()
    assert show["transcript"] == transcript.json()
    assert ISO.match(transcript.json()["created_at"])


def test_every_list_endpoint_answers_items(scene: Scene, gateway: Gateway) -> None:
    reader = gateway.signer.token(*READ)
    admin = gateway.signer.token("admin", *READ)
    with gateway.client() as http:
        for path, token in [
            ("/v1/audio", reader),
            ("/v1/jobs", reader),
            ("/v1/search?q=fox", reader),
            ("/v1/workers", admin),
            ("/v1/datasets", admin),
            ("/v1/training-runs", admin),
        ]:
            answer = http.get(path, headers=bearer(token))
            assert answer.status_code == 200, (path, answer.text)
            assert isinstance(answer.json()["items"], list), path
