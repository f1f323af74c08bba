"""The loop closed in one ``ai2text up``: a run's model is promoted and workers use it.

Files dropped in the inbox cross the training threshold; the orchestrator launches a
trainer command, which leaves the contract's ``RUN_DIR/model/`` (here the bundled
multilingual ``base``, standing in for a fine-tuned model, while the workers start on
the English-only ``tiny.en``) and a ``metrics.json`` that passes the gate. With
``training.auto_promote`` the candidate is promoted, the running workers switch to it
without a restart, and the next file is transcribed by it (German, which ``tiny.en``
cannot write). ``ai2text models rollback`` from another process puts them back.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.models import resolve_model
from tests.e2e.harness import Service, cli_json, cli_text, wait_until
from tests.e2e.test_training_e2e import Conn, training_env

DATA = Path(__file__).resolve().parents[1] / "data"
# Leaves RUN_DIR/model/ (links to the model in argv[2]) and metrics.json; records argv.
TRAINER = (
    "import json, os, sys\n"
    "run, source, base = sys.argv[1], sys.argv[2], sys.argv[3]\n"
    "os.makedirs(os.path.join(run, 'model'))\n"
    "for name in os.listdir(source):\n"
    "    if not name.startswith('.'):\n"
    "        os.symlink(os.path.join(source, name), os.path.join(run, 'model', name))\n"
    "wer = dict(current=dict(dev=0.4, test=0.4, canary=0.1),"
    " candidate=dict(dev=0.2, test=0.2, canary=0.1))\n"
    "open(os.path.join(run, 'metrics.json'), 'w').write(json.dumps(dict(wer=wer)))\n"
    "open(os.path.join(run, 'argv.json'), 'w').write(json.dumps(sys.argv))\n"
)

pytestmark = pytest.mark.slow


def loop_env(root: Path, database_url: str) -> dict[str, str]:
    command = [
        sys.executable,
        "-c",
        TRAINER,
        "{run_dir}",
        resolve_model("base"),
        "{base_model_dir}",
    ]
    # The training test's ``up``, crossing the same threshold, with no gateway.
    return training_env(root, database_url) | {
        "AI2TEXT_GATEWAY__ENABLED": "false",
        "AI2TEXT_ASR__MODEL": "tiny.en",
        "AI2TEXT_ASR__MODEL_CACHE_DIR": str(root / "cache"),
        "AI2TEXT_ASR__DEVICE": "cpu",
        "AI2TEXT_ASR__CONCURRENCY": "1",
        "AI2TEXT_TRAINING__AUTO_PROMOTE": "true",
        "AI2TEXT_TRAINING__COMMAND": json.dumps(command),
    }


def transcript_of(db: Conn, name: str) -> dict[str, Any] | None:
    row: dict[str, Any] | None = db.execute(
        "SELECT t.model, t.model_id, t.language FROM audio a"
        " JOIN transcripts t ON t.audio_id = a.id WHERE a.original_name = %s",
        (name,),
    ).fetchone()
    return row


def workers_on(env: dict[str, str], model: str) -> list[dict[str, Any]] | None:
    alive = [w for w in cli_json(env, "status")["workers"] if w["alive"]]
    return alive if alive and all(w["model"] == model for w in alive) else None


def test_a_promoted_run_model_serves_the_next_file_and_rollback_returns(
    tmp_path: Path, database_url: str, db: Conn
) -> None:
    env = loop_env(tmp_path, database_url)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    service = Service("up", env, tmp_path / "up.log").start()
    try:
        service.wait_for_event("worker ready", timeout=180)
        for name in ("jfk.flac", "hotwords.mp3"):
            shutil.copy(DATA / name, inbox / name)

        def promoted() -> dict[str, Any] | None:
            row: dict[str, Any] | None = db.execute(
                "SELECT * FROM models WHERE state = 'promoted'"
            ).fetchone()
            return row

        model = wait_until(promoted, timeout=300, what="the run's model promoted", every=0.2)
        assert model["decision"].startswith("promoted: test WER 0.2000 against 0.4000")
        run_dir = tmp_path / "data" / "runs" / str(model["run_id"])
        argv = json.loads((run_dir / "argv.json").read_text())
        assert argv[3] == resolve_model("tiny.en")  # {base_model_dir}: what workers ran
        for name in ("jfk.flac", "hotwords.mp3"):
            before = transcript_of(db, name)
            assert before is not None and before["model"] == "tiny.en"
            assert before["model_id"] is None

        workers = wait_until(
            lambda: workers_on(env, model["name"]), timeout=180, what="workers on it"
        )
        assert all(w["model_id"] == str(model["id"]) for w in workers)
        assert f"model {model['name']}" in cli_text(env, "status")
        shutil.copy(DATA / "speech_de.flac", inbox / "after.flac")
        after = wait_until(
            lambda: transcript_of(db, "after.flac"), timeout=180, what="after.flac transcribed"
        )
        assert after["model"] == model["name"] and after["model_id"] == model["id"]
        assert after["language"] == "de"  # base heard German; tiny.en writes English only

        assert "workers return to the configured asr.model" in cli_text(env, "models", "rollback")
        wait_until(lambda: workers_on(env, "tiny.en"), timeout=180, what="workers back")
        shutil.copy(DATA / "speech_fr.flac", inbox / "back.flac")
        back = wait_until(
            lambda: transcript_of(db, "back.flac"), timeout=180, what="back.flac transcribed"
        )
        assert back["model"] == "tiny.en" and back["model_id"] is None
        listed = {m["name"]: m["state"] for m in cli_json(env, "models", "list")}
        assert listed == {model["name"]: "retired"}
    finally:
        assert service.stop() == 0
