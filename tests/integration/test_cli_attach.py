"""``ai2text ls``/``status``/``show`` against a running embedded server answer at once.

While ``ai2text up`` runs, a query connects straight to its PostgreSQL (the socket
recorded in ``postmaster.pid``): it starts nothing, does not join pgserver's holders,
and loads neither the model runtime nor the web framework. Here the test process
plays ``up``: it holds the embedded server, as ``up`` does, and the CLI runs as a
child process.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from pipeline.config import Settings
from pipeline.db.embedded import EmbeddedPostgres
from pipeline.ingest.core import Arrival
from pipeline.permissions import ensure_data_dir
from pipeline.storage import FilesystemStore
from tests.components import ingestor_of, opened
from tests.e2e.gateway_harness import unique_silence
from tests.e2e.harness import REPO
from tests.unit.test_cli_startup import HEAVY

# The settings machinery is needed to answer a query; the rest stays out.
NOT_FOR_QUERIES = tuple(m for m in HEAVY if m != "pydantic_settings")

_PROBE = """
import contextlib, io, json, sys
from ai2text.cli import run
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = run(json.loads(sys.argv[1]))
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def _run(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def _ingest_one(settings: Settings) -> uuid.UUID:
    store = FilesystemStore(settings.data_dir / "objects")
    async with opened(settings) as database:
        data = unique_silence(0.5)
        arrival = Arrival("upload", "kitchen.wav", "upload://test/kitchen", None, "default")
        result = await ingestor_of(settings, database, store).ingest(
            arrival, io.BytesIO(data), len(data)
        )
        assert result.outcome == "accepted", result
        assert result.audio_id is not None
        return result.audio_id


def _holders(pgdata: Path) -> Any:
    return json.loads((pgdata / ".handle_pids.json").read_text())


def test_queries_use_the_running_server_and_load_no_model_or_web_framework(
    embedded_root: Path,
) -> None:
    settings = Settings(
        data_dir=embedded_root / "data",
        watch={"inbox": embedded_root / "inbox", "min_free_bytes": 0},
        asr={"model": "tiny.en"},
    )
    ensure_data_dir(settings.data_dir)
    server = EmbeddedPostgres(settings.data_dir / "pg")
    uri = server.start()  # as `ai2text up` holds it
    try:
        external = settings.database.model_copy(update={"url": SecretStr(uri)})
        audio_id = asyncio.run(_ingest_one(settings.model_copy(update={"database": external})))
        holders = _holders(server.pgdata)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AI2TEXT_")} | {
            "AI2TEXT_DATA_DIR": str(settings.data_dir),
            "AI2TEXT_WATCH__INBOX": str(embedded_root / "inbox"),
        }

        for args in (["ls"], ["status"], ["show", str(audio_id)[:8], "--json"]):
            result = _run(args, env)

            loaded = set(result["modules"])
            assert not loaded & set(NOT_FOR_QUERIES), f"`ai2text {args[0]}` imported heavy parts"
            assert "pgserver" not in loaded, f"`ai2text {args[0]}` went through pgserver"
            assert result["code"] == 0, (args, result["out"])
            if args[0] != "status":
                assert str(audio_id)[:8] in result["out"], result["out"]
        shown = _run(["show", str(audio_id), "--json"], env)
        assert json.loads(shown["out"])["audio"]["original_name"] == "kitchen.wav"

        assert _holders(server.pgdata) == holders  # nobody joined, nobody left
        assert server.is_running()
    finally:
        server.stop()
