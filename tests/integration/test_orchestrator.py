"""The training orchestrator on real PostgreSQL, real transcripts and real trainer processes.

Thresholds are set just below the hours of the transcribed test audio, so a crossing is
made by transcribing one more real file. The ``command`` launcher runs a small Python
trainer that records what it was given; the ``http`` launcher talks to a real HTTP
server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipeline.config import Settings
from pipeline.datasets.freeze import FrozenVersion
from pipeline.datasets.orchestrator import Orchestrator
from pipeline.db.database import Database
from pipeline.db.jobs import TRANSCRIPTS_CHANNEL
from pipeline.errors import TransientError
from tests.components import freezer_of, orchestrator_of
from tests.e2e.harness import Service, wait_until
from tests.integration.test_datasets import (
    BASE,
    FailingStore,
    add_transcribed,
    hashes,
    manifest_lines,
    opened,
    store_of,
    version_dir,
)
from tests.waiting import eventually

Conn = psycopg.Connection[dict[str, Any]]

pytestmark = pytest.mark.slow

# Just below jfk.flac + hotwords.mp3 + stereo_diarization.wav (11 s + 4 s + 5 s).
THRESHOLD_HOURS = (11 + 4 + 5) / 3600 - 0.0005
# A trainer: records its argv, environment and working directory, then exits with
# $TRAINER_EXIT; with $RELEASE (a FIFO) set it first blocks (at most 120 s) until the
# test writes to it.
# No braces: every argument of the command template goes through str.format.
TRAINER = (
    "import json, os, select, sys\n"
    "record = dict(argv=sys.argv, env=dict(os.environ), cwd=os.getcwd())\n"
    "open('trainer.json', 'w').write(json.dumps(record))\n"
    "print('training on', sys.argv[2], flush=True)\n"
    "if 'RELEASE' in os.environ:\n"
    "    fifo = os.open(os.environ['RELEASE'], os.O_RDONLY | os.O_NONBLOCK)\n"
    "    assert select.select([fifo], [], [], 120)[0], 'never released'\n"
    "print('trainer done', flush=True)\n"
    "sys.exit(int(os.environ.get('TRAINER_EXIT', '0')))\n"
)
COMMAND = [
    sys.executable,
    "-c",
    TRAINER,
    "{dataset_dir}",
    "{train_manifest}",
    "{run_id}",
    "{version}",
    "{run_dir}",
    "{dev_manifest}",
    "{test_manifest}",
]
TERMINAL = ("succeeded", "failed")


def training(**overrides: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "threshold_hours": THRESHOLD_HOURS,
        "launcher": "command",
        "command": COMMAND,
        "command_env": {"TRAINER_FLAG": "on"},
        "min_free_bytes": 0,
        **overrides,
    }


def runs(db: Conn) -> list[dict[str, Any]]:
    return db.execute(
        "SELECT r.*, v.version, v.state AS version_state FROM training_runs r"
        " JOIN dataset_versions v ON v.id = r.version_id ORDER BY v.version"
    ).fetchall()


def versions(db: Conn) -> list[dict[str, Any]]:
    return db.execute("SELECT * FROM dataset_versions ORDER BY version, tenant").fetchall()


async def runs_finished(db: Conn, count: int, timeout: float = 90) -> list[dict[str, Any]]:
    """Wait (yielding to the launches on this loop) until ``count`` runs have ended."""

    def finished() -> list[dict[str, Any]] | None:
        rows = runs(db)
        return rows if len(rows) >= count and all(r["state"] in TERMINAL for r in rows) else None

    return await eventually(finished, timeout=timeout, what=f"{count} finished run(s)")


async def release_trainer(fifo: Path) -> None:
    """Let a trainer blocked on ``fifo`` go on (in a thread: opening blocks until it reads)."""

    def write() -> None:
        with open(fifo, "wb") as f:
            f.write(b"go")

    await asyncio.to_thread(write)


def freeze_and_launch_once(settings: Settings, db: Conn, store: Any) -> FrozenVersion:
    """Transcribe enough audio to cross the threshold, check once, wait for the run."""

    async def scenario() -> FrozenVersion:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, *BASE)
            (frozen,) = await orchestrator_of(settings, database, store).check()
            await runs_finished(db, 1)
            return frozen

    return asyncio.run(scenario())


def all_lines(directory: Path) -> list[dict[str, Any]]:
    """Every utterance line of a version's train, dev and test manifests."""
    return [line for lines in manifest_lines(directory).values() for line in lines]


def run_dir(settings: Settings, run_id: Any) -> Path:
    return settings.data_dir / "runs" / str(run_id)


def trainer_record(settings: Settings, run_id: Any, suffix: str = "") -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (settings.data_dir / "runs" / f"{run_id}{suffix}" / "trainer.json").read_text()
    )
    return data


def run_outcomes(orchestrator: Orchestrator) -> dict[str, float]:
    """``ai2text_training_runs_total`` by outcome, as this orchestrator counted them."""
    return {
        outcome: orchestrator.metrics.registry.get_sample_value(
            "ai2text_training_runs_total", {"outcome": outcome}
        )
        or 0.0
        for outcome in ("succeeded", "failed")
    }


# -- the command launcher ---------------------------------------------------------------


def test_crossing_the_threshold_launches_one_command_run_that_succeeds(
    make_settings: Any, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(training=training())
    # Set after the settings are built (an unknown AI2TEXT_* name is refused there): the
    # launcher must still keep it, and every AI2TEXT_* variable, from the trainer.
    monkeypatch.setenv("AI2TEXT_PROBE_SECRET", "must-not-reach-the-trainer")
    store = store_of(settings)

    async def scenario() -> tuple[FrozenVersion, Orchestrator, list[FrozenVersion]]:
        async with opened(settings) as database:
            orchestrator = orchestrator_of(settings, database, store)
            await add_transcribed(settings, database, db, "jfk.flac", "hotwords.mp3")
            assert await orchestrator.check() == []  # 15 s: below the threshold
            assert versions(db) == []
            await add_transcribed(settings, database, db, "stereo_diarization.wav")
            (frozen,) = await orchestrator.check()
            assert frozen.run_id is not None and frozen.tenant == "default"
            await runs_finished(db, 1)
            return frozen, orchestrator, await orchestrator.check()

    frozen, orchestrator, again = asyncio.run(scenario())
    assert again == []  # nothing new since the run: no second crossing
    assert run_outcomes(orchestrator) == {"succeeded": 1, "failed": 0}
    (run,) = runs(db)
    assert len(versions(db)) == 1
    run_id = str(frozen.run_id)
    assert str(run["id"]) == run_id and run["version"] == 1
    assert run["state"] == "succeeded", run["error"]
    assert run["exit_code"] == 0 and run["error"] is None
    assert run["launcher"] == "command" and run["owner"] == orchestrator.owner
    assert run["started_at"] is not None and run["finished_at"] >= run["started_at"]
    assert run["log_key"] == f"runs/{run_id}/log.txt"
    assert run["http_status"] is None and run["remote_id"] is None

    # The placeholders were filled in; the trainer ran in its run directory.
    record = trainer_record(settings, run_id)
    prefix = "datasets/default/v1"
    assert record["argv"][1:] == [
        store.uri(prefix),
        store.uri(f"{prefix}/train.jsonl"),
        run_id,
        "1",
        str(run_dir(settings, run_id)),
        store.uri(f"{prefix}/dev.jsonl"),
        store.uri(f"{prefix}/test.jsonl"),
    ]
    assert Path(record["cwd"]).resolve() == run_dir(settings, run_id).resolve()
    assert Path(record["argv"][2]).is_file()
    assert (Path(record["argv"][1]) / "dataset.json").is_file()
    # Only the configured environment (and a few basics) reach the trainer.
    assert record["env"]["TRAINER_FLAG"] == "on"
    assert "PATH" in record["env"]
    assert not any(k.startswith("AI2TEXT_") for k in record["env"])

    # The log is in the store, the same as the local copy.
    log = store.get_bytes(f"runs/{run_id}/log.txt")
    assert f"training on {store.uri(prefix + '/train.jsonl')}".encode() in log
    assert b"trainer done" in log
    assert (run_dir(settings, run_id) / "launcher.log").read_bytes() == log
    assert not run_dir(settings, run_id).with_name(f"{run_id}.FAILED").exists()


def test_five_orchestrators_checking_at_once_make_one_run_and_one_version(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings(training=training())

    async def scenario() -> tuple[list[list[FrozenVersion]], list[list[FrozenVersion]]]:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, *BASE)
        databases = [Database(settings.database, embedded=None) for _ in range(5)]
        for d in databases:
            await d.open()
        try:
            orchestrators = [orchestrator_of(settings, d, store_of(settings)) for d in databases]
            first = await asyncio.gather(*(o.check() for o in orchestrators))
            await runs_finished(db, 1)
            second = await asyncio.gather(*(o.check() for o in orchestrators))
            return list(first), list(second)
        finally:
            for d in databases:
                await d.close()

    first, second = asyncio.run(scenario())
    winners = [f for frozen in first for f in frozen]
    assert len(winners) == 1
    assert second == [[]] * 5
    assert [v["version"] for v in versions(db)] == [1]
    (run,) = runs(db)
    assert run["state"] == "succeeded" and run["id"] == winners[0].run_id


def test_five_orchestrator_processes_woken_by_one_transcript_make_one_run(
    make_settings: Any, db: Conn, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(training=training())

    async def transcribe(*names: str) -> None:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, *names)

    asyncio.run(transcribe("jfk.flac", "hotwords.mp3"))
    env = {
        "AI2TEXT_DATABASE__URL": database_url,
        "AI2TEXT_DATA_DIR": str(settings.data_dir),
        "AI2TEXT_TRAINING__ENABLED": "true",
        "AI2TEXT_TRAINING__THRESHOLD_HOURS": repr(THRESHOLD_HOURS),
        "AI2TEXT_TRAINING__CHECK_INTERVAL_S": "0.5",
        "AI2TEXT_TRAINING__MIN_FREE_BYTES": "0",
        "AI2TEXT_TRAINING__COMMAND": json.dumps(COMMAND),
    }
    services = [Service("orchestrator", env, tmp_path / f"orchestrator-{i}.log") for i in range(5)]
    try:
        for service in services:
            service.start()
        for service in services:
            service.wait_for_event("orchestrator ready", timeout=120)
        assert versions(db) == []  # below the threshold so far
        # One finished transcript notifies all five at once.
        asyncio.run(transcribe("stereo_diarization.wav"))
        wait_until(
            lambda: (rows := runs(db)) and all(r["state"] in TERMINAL for r in rows),
            timeout=90,
            what="the training run to finish",
        )
        db.execute(f"NOTIFY {TRANSCRIPTS_CHANNEL}")  # and once more, for good measure
        for service in services:
            service.check_alive()
    finally:
        codes: list[int | str] = []
        for service in services:  # stop every one, whatever happened to the others
            try:
                codes.append(service.stop(timeout=60))
            except Exception as exc:
                codes.append(repr(exc))
            finally:
                service.kill()
    assert codes == [0] * 5
    assert [v["version"] for v in versions(db)] == [1]
    (run,) = runs(db)
    assert run["state"] == "succeeded", run["error"]
    crossed = [s.count("training threshold crossed") for s in services]
    assert sorted(crossed) == [0, 0, 0, 0, 1]
    assert sum(s.count("dataset version frozen") for s in services) == 1
    assert sum(s.count("training run finished") for s in services) == 1


def test_a_second_crossing_makes_new_versions_per_language_leaving_v1_untouched(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings(training=training(min_new_hours=0.005))  # 18 s more
    store = store_of(settings)
    v1_before: dict[str, str] = {}

    async def scenario() -> tuple[FrozenVersion, list[FrozenVersion]]:
        async with opened(settings) as database:
            orchestrator = orchestrator_of(settings, database, store)
            await add_transcribed(settings, database, db, *BASE)
            (first,) = await orchestrator.check()
            await runs_finished(db, 1)
            v1_before.update(hashes(version_dir(settings, 1)))
            assert await orchestrator.check() == []  # nothing new yet
            # +59.9 s, English then German: each half goes to its own language's dataset.
            await add_transcribed(settings, database, db, "multilingual.mp3")
            later = await orchestrator.check()
            await runs_finished(db, 3)
            assert await orchestrator.check() == []
            return first, later

    first, later = asyncio.run(scenario())
    assert (first.version, first.languages) == (1, ("en",))
    # German crosses on its own (its first ~30 s); English has ~30 s new, over 18 s.
    assert [(v.version, v.languages) for v in later] == [(2, ("de",)), (3, ("en",))]
    german, english = later
    assert [v["version"] for v in versions(db)] == [1, 2, 3]
    assert [(r["version"], r["state"]) for r in runs(db)] == [
        (1, "succeeded"),
        (2, "succeeded"),
        (3, "succeeded"),
    ]
    assert hashes(version_dir(settings, 1)) == v1_before
    record = trainer_record(settings, english.run_id)
    assert record["argv"][1] == store.uri("datasets/default/v3")
    assert record["argv"][3:5] == [str(english.run_id), "3"]
    v1, v2, v3 = versions(db)
    assert (v1["languages"], v2["languages"], v3["languages"]) == (["en"], ["de"], ["en"])
    assert v3["stats"]["audio"] == 4 and v1["stats"]["audio"] == 3 and v2["stats"]["audio"] == 1
    # The file's hours are shared out between its two languages, and add up to it.
    new_english = v3["audio_hours"] - v1["audio_hours"]
    assert new_english > 10 / 3600 and v2["audio_hours"] > 10 / 3600
    assert new_english + v2["audio_hours"] == pytest.approx(59.9 / 3600, abs=0.2 / 3600)
    (multilingual,) = {e["audio_id"] for e in all_lines(version_dir(settings, 2))}
    assert {e["lang"] for e in all_lines(version_dir(settings, 2))} == {"de"}
    assert {e["lang"] for e in all_lines(version_dir(settings, 3))} == {"en"}
    assert multilingual in {e["audio_id"] for e in all_lines(version_dir(settings, 3))}


def test_a_trainer_exiting_non_zero_fails_the_run_and_marks_its_directory(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings(training=training(command_env={"TRAINER_EXIT": "3"}))
    store = store_of(settings)

    orchestrator: Orchestrator | None = None

    async def scenario() -> FrozenVersion:
        nonlocal orchestrator
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, *BASE)
            orchestrator = orchestrator_of(settings, database, store)
            (frozen,) = await orchestrator.check()
            await runs_finished(db, 1)
            return frozen

    frozen = asyncio.run(scenario())
    (run,) = runs(db)
    run_id = str(frozen.run_id)
    assert run["state"] == "failed"
    assert orchestrator is not None
    assert run_outcomes(orchestrator) == {"succeeded": 0, "failed": 1}
    assert run["exit_code"] == 3
    assert "3" in run["error"] and "exit" in run["error"]
    assert run["finished_at"] is not None
    # The log is kept in the store.
    assert run["log_key"] == f"runs/{run_id}/log.txt"
    log = store.get_bytes(run["log_key"])
    assert b"training on" in log and b"trainer done" in log
    # The run directory can no longer be mistaken for a usable checkpoint.
    failed = run_dir(settings, run_id).with_name(f"{run_id}.FAILED")
    assert not run_dir(settings, run_id).exists()
    assert (failed / "FAILED").is_file()
    assert trainer_record(settings, run_id, ".FAILED")["argv"][3] == run_id
    assert (failed / "launcher.log").read_bytes() == log
    # The frozen version is kept: only the run failed.
    assert versions(db)[0]["state"] == "frozen"


def test_a_running_trainer_heartbeats_and_is_not_reaped_by_another_orchestrator(
    make_settings: Any, db: Conn, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    os.mkfifo(release)
    settings = make_settings(
        training=training(heartbeat_s=0.5, command_env={"RELEASE": str(release)})
    )

    async def scenario() -> None:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, *BASE)
            owner = orchestrator_of(settings, database, store_of(settings))
            other = orchestrator_of(settings, database, store_of(settings))
            assert len(await owner.check()) == 1

            def heartbeating() -> bool:  # running, and heartbeating well past 3 intervals
                (run,) = runs(db)
                assert run["state"] in ("pending", "running"), run
                return (
                    run["state"] == "running"
                    and (run["heartbeat_at"] - run["started_at"]).total_seconds() >= 1.6
                )

            await eventually(heartbeating, timeout=60, what="heartbeats for 1.6 s")
            assert await other.reap_orphans() == 0
            assert runs(db)[0]["state"] == "running"
            await release_trainer(release)
            await runs_finished(db, 1)

    asyncio.run(scenario())
    (run,) = runs(db)
    assert run["state"] == "succeeded", run["error"]


def test_not_enough_free_disk_fails_the_run_without_launching_anything(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings(training=training(min_free_bytes=2**62))
    store = store_of(settings)

    frozen = freeze_and_launch_once(settings, db, store)
    (run,) = runs(db)
    assert run["state"] == "failed"
    assert "not enough free disk" in run["error"] and str(2**62) in run["error"]
    assert run["started_at"] is None and run["exit_code"] is None and run["log_key"] is None
    runs_root = settings.data_dir / "runs"
    assert not runs_root.exists() or list(runs_root.iterdir()) == []
    assert store.stat(f"runs/{frozen.run_id}/log.txt") is None


def test_with_materialize_dir_the_trainer_gets_local_manifests_and_audio(
    make_settings: Any, db: Conn, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    settings = make_settings(training=training(materialize_dir=local))
    store = store_of(settings)

    frozen = freeze_and_launch_once(settings, db, store)
    (run,) = runs(db)
    assert run["state"] == "succeeded", run["error"]
    run_id = str(frozen.run_id)
    record = json.loads((local / "runs" / run_id / "trainer.json").read_text())
    dest = local / "datasets" / "default-v1"
    assert record["argv"][1:3] == [str(dest), str(dest / "train.jsonl")]
    assert record["argv"][6:8] == [str(dest / "dev.jsonl"), str(dest / "test.jsonl")]
    audio_ids = set()
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "metadata.jsonl"):
        for line in (dest / name).read_text().splitlines():
            entry = json.loads(line)
            path = Path(entry.get("audio_filepath") or entry["file_name"])
            assert path.is_file() and path.parent == (dest / "audio").resolve()
            audio_ids.add(entry["audio_id"])
    assert len(audio_ids) == 3
    # The frozen version in the store still names its audio by object key.
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl"):
        for line in (version_dir(settings, 1) / name).read_text().splitlines():
            key = json.loads(line)["audio_filepath"]
            assert key.startswith("audio/sha256/") and (store.root / key).is_file()


# -- the http launcher ------------------------------------------------------------------


@dataclass
class FakeTrainer:
    """A real HTTP server answering POSTs with the scripted statuses (the last one repeats)."""

    statuses: list[int]
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def trainer_server() -> Iterator[Callable[..., FakeTrainer]]:
    servers: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []

    def start(*statuses: int, headers: dict[str, str] | None = None) -> FakeTrainer:
        trainer = FakeTrainer(list(statuses))
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    trainer.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    n = len(trainer.requests)
                status = trainer.statuses[min(n, len(trainer.statuses)) - 1]
                reply = {"id": "remote-42"} if status < 300 else {"error": f"status {status}"}
                data = json.dumps(reply).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        trainer.url = f"http://127.0.0.1:{server.server_address[1]}/v1/runs"
        return trainer

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def http_run(make_settings: Any, db: Conn, **overrides: Any) -> tuple[Settings, FrozenVersion]:
    settings = make_settings(training=training(launcher="http", http_timeout_s=10, **overrides))

    async def scenario() -> FrozenVersion:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, *BASE)
            (frozen,) = await orchestrator_of(settings, database, store_of(settings)).check()
            await runs_finished(db, 1)
            return frozen

    return settings, asyncio.run(scenario())


def test_http_launcher_retries_5xx_then_records_the_remote_run(
    make_settings: Any, db: Conn, trainer_server: Callable[..., FakeTrainer]
) -> None:
    trainer = trainer_server(503, 503, 201)
    settings, frozen = http_run(make_settings, db, http_url=trainer.url, http_token="tok-123")
    store = store_of(settings)
    (run,) = runs(db)
    assert run["state"] == "succeeded", run["error"]
    assert run["remote_id"] == "remote-42" and run["http_status"] == 201
    assert run["launcher"] == "http" and run["exit_code"] is None and run["error"] is None
    assert len(trainer.requests) == 3
    (version,) = versions(db)
    prefix = "datasets/default/v1"
    for request in trainer.requests:
        assert request["path"] == "/v1/runs"
        assert request["headers"]["Authorization"] == "Bearer tok-123"
        assert request["headers"]["Idempotency-Key"] == str(frozen.run_id)
        body = json.loads(request["body"])
        assert body["run_id"] == str(frozen.run_id)
        dataset = body["dataset"]
        assert dataset["name"] == "default" and dataset["version"] == 1
        assert dataset["tenant"] == "default"
        # The manifests name object keys; this is where the keys are.
        assert dataset["audio_root"] == f"{store.root}/"
        assert dataset["dir"] == store.uri(prefix)
        assert dataset["manifests"] == {
            s: store.uri(f"{prefix}/{s}.jsonl") for s in ("train", "dev", "test")
        }
        assert all(Path(p).is_file() for p in dataset["manifests"].values())
        assert dataset["metadata"] == store.uri(f"{prefix}/metadata.jsonl")
        assert dataset["description"] == store.uri(f"{prefix}/dataset.json")
        assert dataset["stats"] == version["stats"] and dataset["stats"]["audio"] == 3
        assert dataset["audio_hours"] == pytest.approx(version["audio_hours"])
        assert dataset["manifest_sha256"] == version["manifest_sha256"]
    assert len({r["body"] for r in trainer.requests}) == 1  # the same request, retried


def test_a_trainer_answering_400_fails_the_run_without_retries(
    make_settings: Any, db: Conn, trainer_server: Callable[..., FakeTrainer]
) -> None:
    trainer = trainer_server(400, 201)
    http_run(make_settings, db, http_url=trainer.url)
    (run,) = runs(db)
    assert run["state"] == "failed"
    assert run["http_status"] == 400 and "400" in run["error"]
    assert run["remote_id"] is None
    assert len(trainer.requests) == 1
    assert "Authorization" not in trainer.requests[0]["headers"]  # no token configured


def test_a_trainer_redirect_is_not_taken_for_an_accepted_run(
    make_settings: Any, db: Conn, trainer_server: Callable[..., FakeTrainer]
) -> None:
    trainer = trainer_server(308, headers={"Location": "https://trainer.example.com/v1/runs"})
    http_run(make_settings, db, http_url=trainer.url, http_attempts=2)
    (run,) = runs(db)
    assert run["state"] == "failed", (run["state"], run["http_status"], run["remote_id"])


# -- orphans and failures ---------------------------------------------------------------


def test_a_run_left_running_by_a_dead_orchestrator_is_reaped_and_the_next_crossing_runs(
    make_settings: Any, db: Conn
) -> None:
    # One dataset for English and German together: multilingual.mp3 makes one crossing.
    settings = make_settings(
        training=training(min_new_hours=0.005, heartbeat_s=10),
        dataset={"languages": [["en", "de"]]},
    )

    async def scenario() -> tuple[int, int, int, list[FrozenVersion], list[FrozenVersion]]:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, *BASE)
            # The dead orchestrator froze v1 and recorded its run...
            orphan = await freezer_of(settings, database, store_of(settings)).freeze(
                languages=["en", "de"], run_launcher="command"
            )
            assert orphan.run_id is not None
            orchestrator = orchestrator_of(settings, database, store_of(settings))
            fresh = await orchestrator.reap_orphans()  # heartbeat just now: not an orphan
            # ...started it, then stopped heartbeating an hour ago.
            db.execute(
                "UPDATE training_runs SET state = 'running', owner = 'gone:4242:dead00',"
                " started_at = now() - interval '1 hour', heartbeat_at = now() - interval '1 hour'"
                " WHERE id = %s",
                (orphan.run_id,),
            )
            # It also left a version half-written long ago.
            db.execute(
                "INSERT INTO dataset_versions (tenant, name, version, prefix, created_at)"
                " VALUES ('default', 'default', 2, 'datasets/default/v2',"
                "  now() - interval '2 hours')"
            )
            reaped = await orchestrator.reap_orphans()
            again = await orchestrator.reap_orphans()
            no_new_hours = await orchestrator.check()
            await add_transcribed(settings, database, db, "multilingual.mp3")
            next_one = await orchestrator.check()
            await runs_finished(db, 2)
            return fresh, reaped, again, no_new_hours, next_one

    fresh, reaped, again, no_new_hours, next_one = asyncio.run(scenario())
    assert (fresh, reaped, again) == (0, 1, 0)
    orphan, successor = runs(db)
    assert orphan["state"] == "failed" and orphan["finished_at"] is not None
    assert "orchestrator" in orphan["error"] and "died" in orphan["error"]
    assert orphan["exit_code"] is None
    assert [(v["version"], v["state"]) for v in versions(db)] == [
        (1, "frozen"),
        (2, "abandoned"),
        (3, "frozen"),
    ]
    # The failed run counts as the run of its crossing; new hours make the next one.
    assert no_new_hours == []
    assert [(v.version, v.languages) for v in next_one] == [(3, ("de", "en"))]
    assert {e["lang"] for e in all_lines(version_dir(settings, 3))} == {"de", "en"}
    assert successor["state"] == "succeeded" and successor["version"] == 3


def test_a_freeze_failing_mid_way_releases_the_lock_and_the_next_check_freezes_anew(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings(training=training())

    async def scenario() -> FrozenVersion:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, *BASE)
            broken = orchestrator_of(settings, database, FailingStore(store_of(settings), 3))
            with pytest.raises(TransientError, match="injected"):
                await broken.check()
            other = orchestrator_of(settings, database, store_of(settings))
            (frozen,) = await other.check()
            await runs_finished(db, 1)
            return frozen

    frozen = asyncio.run(scenario())
    assert frozen.version == 2
    assert [(v["version"], v["state"]) for v in versions(db)] == [(1, "abandoned"), (2, "frozen")]
    (run,) = runs(db)
    assert run["version"] == 2 and run["state"] == "succeeded"


def test_the_orchestrator_loop_survives_a_storage_outage_while_freezing(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings(training=training(check_interval_s=0.2))

    async def scenario() -> BaseException | None:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, *BASE)
            flaky = FailingStore(store_of(settings), 1)  # only the very first write fails
            stop = asyncio.Event()
            task = asyncio.create_task(orchestrator_of(settings, database, flaky).run(stop))
            await eventually(  # or the orchestrator stopping first: reported below
                lambda: task.done() or any(r["state"] in TERMINAL for r in runs(db)),
                timeout=60,
                what="the run to end",
            )
            stop.set()
            await asyncio.wait([task], timeout=30)
            return task.exception() if task.done() else None

    crashed = asyncio.run(scenario())
    assert crashed is None, f"the orchestrator stopped: {crashed!r}"
    assert [r["state"] for r in runs(db)] == ["succeeded"]


def listening(db: Conn) -> bool:
    row = db.execute(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
        " AND query = %s",
        (f"LISTEN {TRANSCRIPTS_CHANNEL}",),
    ).fetchone()
    return bool(row and row["n"])


def test_a_finished_transcript_wakes_the_orchestrator_loop_without_waiting_for_its_timer(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings(training=training(check_interval_s=300))

    async def scenario() -> None:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, "jfk.flac", "hotwords.mp3")
            stop = asyncio.Event()
            task = asyncio.create_task(
                orchestrator_of(settings, database, store_of(settings)).run(stop)
            )
            try:
                await eventually(lambda: listening(db), timeout=30, what="LISTEN", watch=[task])
                started = time.monotonic()
                await add_transcribed(settings, database, db, "stereo_diarization.wav")
                await runs_finished(db, 1, timeout=60)
                assert time.monotonic() - started < 60  # far less than the 300 s timer
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    (run,) = runs(db)
    assert run["state"] == "succeeded", run["error"]


# -- tenants ----------------------------------------------------------------------------

# Below jfk.flac (11 s) and hotwords.mp3 (4 s) alone, and below stereo_diarization.wav's
# 5 s: a tenant crosses with any one of them, and crosses again with one more.
TENANT_THRESHOLD_HOURS = 3.5 / 3600


def test_each_tenants_crossing_makes_its_own_version_and_run_exactly_once(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings(training=training(threshold_hours=TENANT_THRESHOLD_HOURS))
    store = store_of(settings)

    async def scenario() -> tuple[dict[str, Any], list[FrozenVersion], list[FrozenVersion]]:
        async with opened(settings) as database:
            orchestrator = orchestrator_of(settings, database, store)
            ids = await add_transcribed(settings, database, db, "jfk.flac", tenant="acme")
            ids |= await add_transcribed(settings, database, db, "hotwords.mp3", tenant="globex")
            first = await orchestrator.check()
            await runs_finished(db, 2)
            assert await orchestrator.check() == []  # each crossing ran once
            # globex alone crosses again; acme has nothing new.
            ids |= await add_transcribed(
                settings, database, db, "stereo_diarization.wav", tenant="globex"
            )
            second = await orchestrator.check()
            await runs_finished(db, 3)
            assert await orchestrator.check() == []
            return ids, first, second

    ids, first, second = asyncio.run(scenario())
    assert [(f.tenant, f.version) for f in first] == [("acme", 1), ("globex", 1)]
    assert [(f.tenant, f.version) for f in second] == [("globex", 2)]
    rows = db.execute(
        "SELECT v.tenant, v.version, v.prefix, r.state, array_agg(i.audio_id::text) AS audio"
        " FROM dataset_versions v JOIN training_runs r ON r.version_id = v.id"
        " JOIN dataset_items i ON i.version_id = v.id"
        " GROUP BY v.tenant, v.version, v.prefix, r.state ORDER BY v.tenant, v.version"
    ).fetchall()
    assert [(r["tenant"], r["version"], r["state"], sorted(r["audio"])) for r in rows] == [
        ("acme", 1, "succeeded", [str(ids["jfk.flac"])]),
        ("globex", 1, "succeeded", [str(ids["hotwords.mp3"])]),
        (
            "globex",
            2,
            "succeeded",
            sorted([str(ids["hotwords.mp3"]), str(ids["stereo_diarization.wav"])]),
        ),
    ]
    assert [r["prefix"] for r in rows] == [
        "datasets/default/tenants/acme/v1",
        "datasets/default/tenants/globex/v1",
        "datasets/default/tenants/globex/v2",
    ]
    # Each run was handed its own tenant's version.
    for frozen in (*first, *second):
        record = trainer_record(settings, frozen.run_id)
        assert record["argv"][1] == store.uri(frozen.prefix)
        assert record["argv"][4] == str(frozen.version)
        manifest = Path(record["argv"][2]).read_text()
        others = {str(i) for i in ids.values()} - {str(a) for a, *_ in frozen.items}
        assert not any(other in manifest for other in others), frozen.tenant


def test_one_tenants_failed_freeze_costs_no_other_tenant_its_run(
    make_settings: Any, db: Conn
) -> None:
    settings = make_settings(training=training(threshold_hours=TENANT_THRESHOLD_HOURS))

    async def scenario() -> list[FrozenVersion]:
        async with opened(settings) as database:
            await add_transcribed(settings, database, db, "jfk.flac", tenant="acme")
            await add_transcribed(settings, database, db, "hotwords.mp3", tenant="globex")
            # acme is frozen first and its first write fails; globex's freeze goes on.
            broken = orchestrator_of(settings, database, FailingStore(store_of(settings), 1))
            with pytest.raises(TransientError, match="injected"):
                await broken.check()
            await runs_finished(db, 1)
            # The next check freezes acme anew (its failed version keeps its number).
            retried = await orchestrator_of(settings, database, store_of(settings)).check()
            await runs_finished(db, 2)
            return retried

    retried = asyncio.run(scenario())
    assert [(f.tenant, f.version) for f in retried] == [("acme", 2)]
    assert [(v["tenant"], v["version"], v["state"]) for v in versions(db)] == [
        ("acme", 1, "abandoned"),
        ("globex", 1, "frozen"),
        ("acme", 2, "frozen"),
    ]
    assert sorted((r["version"], r["state"]) for r in runs(db)) == [
        (1, "succeeded"),
        (2, "succeeded"),
    ]
