"""``ai2text worker`` as its own process against a shared PostgreSQL: flags and presence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.harness import Service, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def worker_env(root: Path, database_url: str) -> dict[str, str]:
    return {
        "AI2TEXT_DATABASE__URL": database_url,
        "AI2TEXT_DATA_DIR": str(root / "data"),
        "AI2TEXT_QUEUE__POLL_INTERVAL_S": "0.5",
        "AI2TEXT_QUEUE__HEARTBEAT_S": "0.5",
    }


def alive_workers(database_url: str, pid: int) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            "SELECT * FROM workers WHERE pid = %s AND stopped_at IS NULL"
            " AND last_seen_at > started_at ORDER BY worker_id",
            (pid,),
        ).fetchall()


def test_worker_flags_set_device_and_concurrency_and_rows_show_them(
    tmp_path: Path, database_url: str
) -> None:
    service = Service(
        "worker",
        worker_env(tmp_path, database_url),
        tmp_path / "worker.log",
        args=("--device", "cpu", "--concurrency", "2"),
    ).start()
    try:
        ready = service.wait_for_event("model loaded", timeout=120)
        assert ready["device"] == "cpu" and ready["compute_type"] == "int8"
        # Two workers in one process, one model: both heartbeat (last_seen moves on).
        rows = wait_until(
            lambda: r if len(r := alive_workers(database_url, service.pid)) == 2 else None,
            timeout=60,
            what="two live workers in one process",
        )
        assert [r["worker_id"].rsplit(":", 1)[1] for r in rows] == ["0", "1"]
        assert {r["device"] for r in rows} == {"cpu"}
    finally:
        assert service.stop() == 0
    with psycopg.connect(database_url) as conn:
        stopped = conn.execute(
            "SELECT count(*) FROM workers WHERE pid = %s AND stopped_at IS NOT NULL",
            (service.pid,),
        ).fetchone()
    assert stopped == (2,)  # a clean stop says so on the rows


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--device", "tpu"), "unknown ASR device 'tpu'"),
        (("--device", "cuda:x"), "unknown ASR device 'cuda:x'"),
        (("--concurrency", "0"), "--concurrency must be at least 1"),
    ],
)
def test_bad_worker_flags_fail_at_once_with_a_clear_message(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI2TEXT_")}
    env["AI2TEXT_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-m", "ai2text", "worker", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "data" / "pg").exists()  # failed before starting a database
