"""``ai2text up`` with training on: files dropped in the inbox end as one training run.

The whole path runs as a real process: hot folder, real transcription, the orchestrator
freezing a version once the threshold is crossed, a real trainer command, then the CLI
and the HTTP API reporting the version and the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from pipeline.config import DatasetSettings
from pipeline.datasets.utterances import split_for
from tests.e2e.harness import REPO, Service, cli_json, wait_until

DATA = Path(__file__).resolve().parents[1] / "data"
FILES = ("jfk.flac", "hotwords.mp3")
# Just below jfk.flac + hotwords.mp3 (11 s + 4 s): jfk.flac alone is not enough.
THRESHOLD_HOURS = (11 + 4) / 3600 - 0.0005
TRAINER = (
    "import json, os, sys\n"
    "open('trainer.json', 'w').write(json.dumps(dict(argv=sys.argv, cwd=os.getcwd())))\n"
    "print('training on', sys.argv[2], flush=True)\n"
)

Conn = psycopg.Connection[dict[str, Any]]

pytestmark = pytest.mark.slow


def training_env(root: Path, database_url: str) -> dict[str, str]:
    return {
        "AI2TEXT_DATABASE__URL": database_url,
        "AI2TEXT_DATA_DIR": str(root / "data"),
        "AI2TEXT_WATCH__INBOX": str(root / "inbox"),
        "AI2TEXT_WATCH__QUIET_PERIOD_S": "0.5",
        "AI2TEXT_WATCH__MIN_FREE_BYTES": "0",
        "AI2TEXT_QUEUE__POLL_INTERVAL_S": "1",
        "AI2TEXT_GATEWAY__PORT": "0",
        "AI2TEXT_TRAINING__ENABLED": "true",
        "AI2TEXT_TRAINING__THRESHOLD_HOURS": repr(THRESHOLD_HOURS),
        "AI2TEXT_TRAINING__CHECK_INTERVAL_S": "1",
        "AI2TEXT_TRAINING__MIN_FREE_BYTES": "0",
        "AI2TEXT_TRAINING__COMMAND": json.dumps(
            [sys.executable, "-c", TRAINER, "{dataset_dir}", "{train_manifest}", "{run_id}"]
        ),
    }


def mint_token(env: dict[str, str], *scopes: str) -> str:
    args = [a for scope in scopes for a in ("--scope", scope)]
    done = subprocess.run(
        [sys.executable, "-m", "ai2text", "token", *args],
        env={**os.environ, **env},
        capture_output=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done.stdout.decode().strip()


def finished_runs(db: Conn) -> list[dict[str, Any]] | None:
    rows = db.execute(
        "SELECT r.*, v.version FROM training_runs r JOIN dataset_versions v"
        " ON v.id = r.version_id ORDER BY r.created_at"
    ).fetchall()
    if rows and all(r["state"] in ("succeeded", "failed") for r in rows):
        return rows
    return None


def test_dropped_files_crossing_the_threshold_become_one_run_seen_by_cli_and_api(
    tmp_path: Path, database_url: str, db: Conn
) -> None:
    env = training_env(tmp_path, database_url)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    service = Service("up", env, tmp_path / "up.log").start()
    try:
        service.wait_for_event("worker ready", timeout=180)
        service.wait_for_event("orchestrator ready", timeout=60)
        base_url = service.wait_for_event("gateway listening", timeout=60)["url"]

        for name in FILES:
            shutil.copy(DATA / name, inbox / name)
        rows = wait_until(
            lambda: finished_runs(db), timeout=240, what="a training run to finish", every=0.2
        )
        (run,) = rows
        assert run["state"] == "succeeded", run["error"]
        assert run["exit_code"] == 0 and run["version"] == 1
        run_id = str(run["id"])
        data_dir = tmp_path / "data"
        version_dir = data_dir / "objects" / "datasets" / "default" / "v1"
        record = json.loads((data_dir / "runs" / run_id / "trainer.json").read_text())
        assert record["argv"][1:] == [
            str(version_dir),
            str(version_dir / "train.jsonl"),
            run_id,
        ]
        assert (data_dir / "objects" / "runs" / run_id / "log.txt").is_file()

        # The CLI, with the same environment.
        listed = cli_json(env, "runs")
        assert [(r["id"], r["state"], r["dataset"], r["version"]) for r in listed] == [
            (run_id, "succeeded", "default", 1)
        ]
        stats = cli_json(env, "dataset", "stats")
        assert stats["name"] == "default"
        assert stats["threshold_hours"] == pytest.approx(THRESHOLD_HOURS)
        assert stats["eligible_hours"] == pytest.approx(15 / 3600, abs=0.2 / 3600)
        assert [(v["version"], v["state"]) for v in stats["versions"]] == [(1, "frozen")]
        assert stats["versions"][0]["audio_hours"] == pytest.approx(stats["eligible_hours"])
        assert stats["versions"][0]["stats"]["audio"] == 2

        # The HTTP API, with a token minted by the CLI from the dev keys in the data dir.
        token = mint_token(env, "datasets:read", "training:read")
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base_url, timeout=30) as client:
            datasets = client.get("/v1/datasets", headers=auth)
            assert datasets.status_code == 200, datasets.text
            (version,) = datasets.json()["items"]
            assert (version["name"], version["version"], version["state"]) == (
                "default",
                1,
                "frozen",
            )
            assert version["audio_hours"] == pytest.approx(stats["eligible_hours"])

            one = client.get("/v1/datasets/1", headers=auth)
            assert one.status_code == 200, one.text
            assert one.json()["manifests"]["train.jsonl"].startswith("/v1/datasets/1/files/")

            training_runs = client.get("/v1/training-runs", headers=auth)
            assert training_runs.status_code == 200, training_runs.text
            assert [(r["id"], r["state"], r["version"]) for r in training_runs.json()["items"]] == [
                (run_id, "succeeded", 1)
            ]

            with client.stream("GET", "/v1/datasets/1/files/train.jsonl", headers=auth) as got:
                assert got.status_code == 200
                assert got.headers["content-type"].startswith("application/x-ndjson")
                body = b"".join(got.iter_bytes())
            assert body == (version_dir / "train.jsonl").read_bytes()
            in_train = [
                n
                for n in FILES
                if split_for(hashlib.sha256((DATA / n).read_bytes()).hexdigest(), DatasetSettings())
                == "train"
            ]
            lines = [json.loads(line) for line in body.decode().splitlines()]
            assert len({e["audio_id"] for e in lines}) == len(in_train)
            # Served manifests name audio by object key, never by the server's path.
            assert all(not Path(e["audio_filepath"]).is_absolute() for e in lines)
            assert all((data_dir / "objects" / e["audio_filepath"]).is_file() for e in lines)

            # Reading datasets and runs takes their scopes.
            plain = {"Authorization": f"Bearer {mint_token(env)}"}
            assert client.get("/v1/datasets", headers=plain).status_code == 403
            assert client.get("/v1/training-runs", headers=plain).status_code == 403

        # Still exactly one run and one version: nothing was added since the crossing.
        assert finished_runs(db) == rows
        assert service.count("training threshold crossed") == 1
    finally:
        try:
            assert service.stop() == 0
        finally:
            service.kill()
