"""The model registry on real PostgreSQL and a real filesystem object store.

A training run is launched by the real orchestrator with the ``command`` launcher; its
trainer is a small Python program that leaves what the trainer contract says
(``RUN_DIR/model/`` and ``RUN_DIR/metrics.json``) with the numbers the test chose.
The model files are stand-ins: registering, storing, fetching and the gate never load
them (a worker loading real models is in test_model_follow.py).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ai2text import cli
from pipeline.config import Settings
from pipeline.datasets.freeze import FrozenVersion
from pipeline.db.database import Database
from pipeline.errors import Conflict
from pipeline.models import resolve_model
from pipeline.registry import candidates, records
from pipeline.registry.files import ModelUnavailable, cached_dir, fetch_model
from pipeline.storage import FilesystemStore
from tests.components import orchestrator_of

Conn = psycopg.Connection[dict[str, Any]]

# Leaves RUN_DIR/model/ and RUN_DIR/metrics.json ($METRICS), and what it was given.
TRAINER = (
    "import json, os, sys\n"
    "run = sys.argv[1]\n"
    "os.makedirs(os.path.join(run, 'model'))\n"
    "for name in ('model.bin', 'config.json', 'tokenizer.json', 'vocabulary.txt'):\n"
    "    open(os.path.join(run, 'model', name), 'w').write(name * 50)\n"
    "open(os.path.join(run, 'metrics.json'), 'w').write(os.environ['METRICS'])\n"
    "open(os.path.join(run, 'argv.json'), 'w').write(json.dumps(sys.argv))\n"
)
COMMAND = [sys.executable, "-c", TRAINER, "{run_dir}", "{base_model_dir}"]


def metrics(test: tuple[float, float], canary: tuple[float, float] = (0.1, 0.1)) -> str:
    return json.dumps(
        {
            "trainer": "whisper",
            "base_model": "x",
            "steps": 3,
            "wer": {
                "current": {"dev": 0.3, "test": test[0], "canary": canary[0]},
                "candidate": {"dev": 0.2, "test": test[1], "canary": canary[1]},
            },
            "wer_by_language": {"current": {"test": {"en": test[0]}}},
            "utterances": {"train": 4, "dev": 1, "test": 1, "canary": 3},
        }
    )


def settings_with(make_settings: Any, tmp_path: Path, **training: Any) -> Settings:
    settings: Settings = make_settings(
        asr={"model": "tiny.en", "model_cache_dir": tmp_path / "cache"},
        training={
            "enabled": True,
            "launcher": "command",
            "command": COMMAND,
            "min_free_bytes": 0,
            **training,
        },
    )
    return settings


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.database, embedded=None)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


def frozen_version(db: Conn, number: int) -> FrozenVersion:
    """A frozen version and its pending run, as a threshold crossing leaves them."""
    prefix = f"datasets/default/default-en/v{number}"
    row = db.execute(
        "INSERT INTO dataset_versions (tenant, name, version, prefix, languages, state)"
        " VALUES ('default', 'default-en', %s, %s, ARRAY['en'], 'frozen') RETURNING id",
        (number, prefix),
    ).fetchone()
    assert row is not None
    run = db.execute(
        "INSERT INTO training_runs (version_id, launcher, heartbeat_at)"
        " VALUES (%s, 'command', now()) RETURNING id",
        (row["id"],),
    ).fetchone()
    assert run is not None
    return FrozenVersion(
        id=row["id"],
        name="default-en",
        version=number,
        prefix=prefix,
        audio_hours=0.01,
        utterance_hours=0.01,
        stats={},
        manifest_sha256={},
        languages=("en",),
        run_id=run["id"],
    )


async def launch(settings: Settings, database: Database, frozen: FrozenVersion) -> Path:
    store = FilesystemStore(settings.data_dir / "objects")
    await orchestrator_of(settings, database, store).launch(frozen)
    return settings.data_dir / "runs" / str(frozen.run_id)


def models(db: Conn) -> list[dict[str, Any]]:
    return db.execute("SELECT * FROM models ORDER BY created_at").fetchall()


def test_a_finished_run_registers_a_candidate_with_its_files_metrics_and_base(
    make_settings: Any, tmp_path: Path, db: Conn
) -> None:
    settings = settings_with(make_settings, tmp_path, command_env={"METRICS": metrics((0.3, 0.2))})

    async def scenario() -> tuple[FrozenVersion, Path]:
        async with opened(settings) as database:
            frozen = frozen_version(db, 1)
            return frozen, await launch(settings, database, frozen)

    frozen, run_dir = asyncio.run(scenario())
    (run,) = db.execute("SELECT state, error FROM training_runs").fetchall()
    assert run == {"state": "succeeded", "error": None}
    # {base_model_dir}: the configured model's directory (no model promoted yet).
    argv = json.loads((run_dir / "argv.json").read_text())
    assert argv[2] == resolve_model("tiny.en")

    (model,) = models(db)
    assert model["state"] == "candidate" and model["decision"] is None
    assert model["name"] == f"default-en-v1-{model['id'].hex[:6]}"
    assert model["base_model"] == "tiny.en" and model["base_model_id"] is None
    assert model["run_id"] == frozen.run_id and model["dataset_version_id"] == frozen.id
    assert model["tenant"] == "default"
    assert model["metrics"]["wer"]["candidate"]["test"] == 0.2
    assert model["prefix"] == f"models/{model['id']}"
    files = {f["name"]: f for f in model["files"]}
    assert set(files) == {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    objects = settings.data_dir / "objects" / model["prefix"]
    for name, entry in files.items():
        assert (objects / name).read_bytes() == (run_dir / "model" / name).read_bytes()
        assert entry["size"] == (objects / name).stat().st_size
    assert model["size_bytes"] == sum(f["size"] for f in files.values())
    events = db.execute("SELECT action, actor FROM model_events").fetchall()
    assert events == [{"action": "registered", "actor": "orchestrator"}]


def test_auto_promotion_takes_a_better_candidate_and_refuses_a_worse_one(
    make_settings: Any, tmp_path: Path, db: Conn
) -> None:
    better = settings_with(
        make_settings,
        tmp_path,
        auto_promote=True,
        promote_margin=0.1,
        command_env={"METRICS": metrics((0.30, 0.20))},
    )
    worse = better.model_copy(
        update={
            "training": better.training.model_copy(
                update={
                    "launch": better.training.launch.model_copy(
                        update={"command_env": {"METRICS": metrics((0.20, 0.19))}}
                    )
                }
            )
        }
    )

    async def scenario() -> Path:
        async with opened(better) as database:
            await launch(better, database, frozen_version(db, 1))
            return await launch(worse, database, frozen_version(db, 2))

    second_run = asyncio.run(scenario())
    first, second = models(db)
    assert first["state"] == "promoted" and first["promoted_by"] == "gate"
    assert first["decision"].startswith("promoted: test WER 0.2000 against 0.3000")
    # The second run started from the promoted model: its cached, checked copy.
    argv = json.loads((second_run / "argv.json").read_text())
    assert argv[2] == str(tmp_path / "cache" / "registry" / str(first["id"]))
    assert second["base_model"] == first["name"] and second["base_model_id"] == first["id"]
    assert second["state"] == "candidate"
    assert "not promoted: test WER 0.1900 against 0.2000" in second["decision"]
    actions = db.execute("SELECT action FROM model_events ORDER BY seq").fetchall()
    assert [a["action"] for a in actions] == ["registered", "promoted", "registered", "refused"]


async def candidate(
    database: Database, settings: Settings, tmp_path: Path, name: str, test: tuple[float, float]
) -> records.ModelRecord:
    """A candidate registered from a run directory holding stand-in model files."""
    run_dir = tmp_path / name
    (run_dir / "model").mkdir(parents=True)
    for file in ("model.bin", "config.json", "tokenizer.json"):
        (run_dir / "model" / file).write_text(f"{name} {file} " * 10)
    (run_dir / "metrics.json").write_text(metrics(test))
    store = FilesystemStore(settings.data_dir / "objects")
    base = candidates.BaseModel("tiny.en", None, "")
    model = await candidates.register_run(database, store, run_dir, base=base)
    assert model is not None
    return model


def test_manual_promotion_runs_the_gate_and_only_force_overrides_it(
    make_settings: Any, tmp_path: Path, db: Conn
) -> None:
    settings = settings_with(make_settings, tmp_path)
    rules = candidates.rules_of(settings.training)

    async def scenario() -> None:
        async with opened(settings) as database:
            model = await candidate(database, settings, tmp_path, "run", (0.2, 0.25))
            refused, decision = await candidates.judge(database, model.name, rules, actor="ops")
            assert not decision.promote and refused.state == "candidate"
            assert refused.decision is not None and "not promoted" in refused.decision
            forced, decision = await candidates.judge(
                database, str(model.id)[:8], rules, actor="ops", force=True
            )
            assert decision.promote and forced.state == "promoted"
            assert forced.promoted_by == "ops"
            assert forced.decision is not None and forced.decision.startswith("forced by ops")
            with pytest.raises(records.ModelNotFound):
                await candidates.judge(database, "no-such-model", rules, actor="ops")

    asyncio.run(scenario())


def test_rollback_returns_to_the_model_promoted_before_then_to_the_configured_one(
    make_settings: Any, tmp_path: Path, db: Conn
) -> None:
    settings = settings_with(make_settings, tmp_path)

    async def scenario() -> None:
        async with opened(settings) as database:
            a = await candidate(database, settings, tmp_path, "a", (0.3, 0.2))
            b = await candidate(database, settings, tmp_path, "b", (0.3, 0.2))
            async with database.connection() as conn:
                await records.promote(conn, str(a.id), actor="ops", reason="first")
                await records.promote(conn, str(b.id), actor="ops", reason="second")
                assert (await records.get(conn, str(a.id))).state == "retired"
                retired, restored = await records.rollback(conn, actor="ops")
                assert retired.id == b.id and retired.state == "retired"
                assert retired.retired_by == "ops"
                assert restored is not None and restored.id == a.id
                assert restored.state == "promoted"
                current = await records.promoted(conn)
                assert current is not None and current.id == a.id
                retired, restored = await records.rollback(conn, actor="ops")
                assert retired.id == a.id and restored is None
                assert await records.promoted(conn) is None
                with pytest.raises(Conflict, match="no model is promoted"):
                    await records.rollback(conn, actor="ops")

    asyncio.run(scenario())


def test_a_model_whose_stored_files_changed_or_went_missing_is_not_fetched(
    make_settings: Any, tmp_path: Path, db: Conn
) -> None:
    settings = settings_with(make_settings, tmp_path)
    store = FilesystemStore(settings.data_dir / "objects")
    cache = tmp_path / "fetched"

    async def register() -> records.ModelRecord:
        async with opened(settings) as database:
            return await candidate(database, settings, tmp_path, "run", (0.3, 0.2))

    model = asyncio.run(register())
    good = fetch_model(store, model, cache)
    assert good == cached_dir(cache, model)
    assert (good / "model.bin").read_text() == "run model.bin " * 10
    shutil.rmtree(good)
    stored = settings.data_dir / "objects" / model.prefix / "model.bin"
    stored.write_text("RUN MODEL.BIN " * 10)  # same size, other bytes
    with pytest.raises(ModelUnavailable, match="does not match its recorded sha256"):
        fetch_model(store, model, cache)
    stored.write_text("short")
    with pytest.raises(ModelUnavailable, match="has 5 bytes in storage"):
        fetch_model(store, model, cache)
    stored.unlink()
    with pytest.raises(ModelUnavailable, match="is missing from storage"):
        fetch_model(store, model, cache)
    # Nothing half-fetched is left where a worker would look.
    assert not cached_dir(cache, model).exists()
    assert [p.name for p in (cache / "registry").iterdir() if not p.name.endswith(".lock")] == []


def test_a_run_without_metrics_registers_nothing_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    with pytest.raises(candidates.CandidateRejected, match="no metrics.json"):
        candidates.read_run_output(tmp_path)
    assert candidates.read_run_output(tmp_path / "empty") is None
    (tmp_path / "checkpoint-only").mkdir()
    (tmp_path / "checkpoint-only" / "metrics.json").write_text("{}")
    assert candidates.read_run_output(tmp_path / "checkpoint-only") is None
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(candidates.CandidateRejected, match="cannot be read as JSON"):
        candidates.read_run_output(tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(candidates.CandidateRejected, match="missing model.bin"):
        candidates.read_run_output(tmp_path)


def test_the_models_command_promotes_refuses_lists_and_rolls_back(
    make_settings: Any,
    tmp_path: Path,
    db: Conn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_with(make_settings, tmp_path)
    assert settings.database.url is not None
    monkeypatch.setenv("AI2TEXT_DATABASE__URL", settings.database.url.get_secret_value())
    monkeypatch.setenv("AI2TEXT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("AI2TEXT_ASR__MODEL", "tiny.en")

    async def register() -> tuple[records.ModelRecord, records.ModelRecord]:
        async with opened(settings) as database:
            good = await candidate(database, settings, tmp_path, "good", (0.3, 0.2))
            return good, await candidate(database, settings, tmp_path, "bad", (0.3, 0.35))

    good, bad = asyncio.run(register())
    capsys.readouterr()
    assert cli.run(["models", "promote", bad.name]) == 1
    refused = capsys.readouterr()
    assert "test WER 0.3500 against 0.3000" in refused.err and "--force" in refused.err
    assert cli.run(["models", "promote", str(good.id)]) == 0
    assert f"model {good.name} ({good.id}) promoted" in capsys.readouterr().out
    assert cli.run(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert f"{good.name}" in listed and "promoted" in listed
    assert "0.300 → 0.350" in listed and "not promoted" in listed
    assert cli.run(["models", "list", "--json"]) == 0
    states = {m["name"]: m["state"] for m in json.loads(capsys.readouterr().out)}
    assert states == {good.name: "promoted", bad.name: "candidate"}
    assert cli.run(["models"]) == 0  # installed models, then the registry
    both = capsys.readouterr().out
    assert "tiny.en" in both and "trained models" in both and good.name in both
    assert cli.run(["models", "rollback"]) == 0
    assert "workers return to the configured asr.model" in capsys.readouterr().out
    assert cli.run(["models", "rollback"]) == 1
    assert "no model is promoted" in capsys.readouterr().err

    by_hand = tmp_path / "by-hand"  # trained outside the orchestrator
    (by_hand / "model").mkdir(parents=True)
    for file in ("model.bin", "config.json", "tokenizer.json"):
        (by_hand / "model" / file).write_text(file)
    (by_hand / "metrics.json").write_text(metrics((0.3, 0.1)))
    assert cli.run(["models", "register", str(by_hand), "--json"]) == 0
    registered = json.loads(capsys.readouterr().out)
    assert registered["state"] == "candidate" and registered["base_model"] == "tiny.en"
    assert registered["created_by"].startswith("cli")
    assert cli.run(["models", "register", str(tmp_path / "nothing")]) == 1
    assert "holds no model/ directory" in capsys.readouterr().err
    row = db.execute("SELECT state, retired_by FROM models WHERE id = %s", (good.id,)).fetchone()
    assert row is not None and row["state"] == "retired"
    assert str(row["retired_by"]).startswith("cli")
