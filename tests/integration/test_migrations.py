"""Schema migrations against a real PostgreSQL: first run, re-run, concurrent runs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg

from pipeline.db.migrate import available_migrations, migrate

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"audio", "jobs", "transcripts", "segments"}


def _tables(db: psycopg.Connection[Any]) -> set[str]:
    rows = db.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    ).fetchall()
    return {r["table_name"] for r in rows}


def _versions(db: psycopg.Connection[Any]) -> list[int]:
    rows = db.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [int(r["version"]) for r in rows]


def _shipped() -> list[int]:
    return [m.version for m in available_migrations()]


def test_shipped_migrations_start_at_version_1_and_are_unique() -> None:
    versions = _shipped()
    assert versions[0] == 1
    assert len(versions) == len(set(versions))
    assert all(m.sql.strip() for m in available_migrations())


def test_migrate_fresh_database_creates_tables_and_records_version_1_once(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    assert not TABLES & _tables(db)

    with psycopg.connect(database_url) as conn:
        applied = migrate(conn)

    assert applied == _shipped()
    assert 1 in applied
    assert TABLES | {"schema_migrations"} <= _tables(db)
    assert _versions(db) == _shipped()
    row = db.execute("SELECT name FROM schema_migrations WHERE version = 1").fetchone()
    assert row is not None and row["name"] == "initial"


def test_migrate_again_applies_nothing(database_url: str, db: psycopg.Connection[Any]) -> None:
    with psycopg.connect(database_url) as conn:
        assert migrate(conn) == _shipped()
    with psycopg.connect(database_url) as conn:
        assert migrate(conn) == []
        # The same connection can run it again too, and is left usable.
        assert migrate(conn) == []
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert _versions(db) == _shipped()


def test_migrate_releases_its_advisory_lock(database_url: str, db: psycopg.Connection[Any]) -> None:
    with psycopg.connect(database_url) as conn:
        migrate(conn)
        held = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
        assert held == (0,)


def test_migrate_from_four_threads_at_once_applies_each_version_once(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    n = 4
    barrier = threading.Barrier(n, timeout=60)
    results: list[list[int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            with psycopg.connect(database_url) as conn:
                barrier.wait()
                applied = migrate(conn)
            with lock:
                results.append(applied)
        except BaseException as exc:  # collected and asserted on below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)

    assert errors == []
    assert len(results) == n
    applied_all = sorted(v for r in results for v in r)
    assert applied_all == _shipped()  # every version applied by exactly one thread
    assert sum(1 for r in results if r) == 1
    assert _versions(db) == _shipped()
    assert TABLES <= _tables(db)


_CHILD = """
import json, sys
import psycopg
from pipeline.db.migrate import migrate
with psycopg.connect(sys.argv[1]) as conn:
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")
    applied = migrate(conn)
print(json.dumps(applied), flush=True)
"""


def test_migrate_from_two_processes_at_once_applies_each_version_once(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, database_url],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        # Both are connected before either starts migrating.
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    applied = [json.loads(out.strip().splitlines()[-1]) for out, _err in outputs]
    assert sorted(v for a in applied for v in a) == _shipped()
    assert sum(1 for a in applied if a) == 1
    assert _versions(db) == _shipped()
    assert TABLES <= _tables(db)
