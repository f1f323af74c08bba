"""``Database`` hands out connections whose failures are ai2text's errors, not psycopg's.

A connection killed by the server, a pool with nothing free, a unique key taken
and a value out of range each come out as one error of ``pipeline.errors``,
with the driver's error as its cause.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipeline.errors import Conflict, DatabaseUnavailable, TransientError, ValueRefused
from tests.components import opened


async def _add_rejected(conn: Any, uri: str) -> None:
    await conn.execute(
        "INSERT INTO audio (source, original_name, source_uri, source_version, state)"
        " VALUES ('folder', 'a.wav', %s, 'v1', 'rejected')",
        (uri,),
    )


def test_a_connection_killed_by_the_server_raises_database_unavailable(
    make_settings: Any, db: psycopg.Connection[Any]
) -> None:
    async def scenario() -> None:
        async with opened(make_settings(), pool_max_size=1) as database:
            with pytest.raises(DatabaseUnavailable) as raised:
                async with database.connection() as conn:
                    cur = await conn.execute("SELECT pg_backend_pid() AS pid")
                    row = await cur.fetchone()
                    assert row is not None
                    db.execute("SELECT pg_terminate_backend(%s)", (row["pid"],))
                    await conn.execute("SELECT 1")
            assert isinstance(raised.value, TransientError)
            assert isinstance(raised.value.__cause__, psycopg.OperationalError)
            # The pool dropped the dead connection: the next one works.
            async with database.connection() as conn:
                await conn.execute("SELECT 1")

    asyncio.run(scenario())


def test_waiting_for_a_connection_from_an_exhausted_pool_raises_database_unavailable(
    make_settings: Any,
) -> None:
    settings = make_settings(database={"connect_timeout_s": 1})

    async def scenario() -> None:
        async with opened(settings, pool_max_size=1) as database:
            async with database.connection():
                with pytest.raises(DatabaseUnavailable):
                    async with database.connection():
                        pass

    asyncio.run(scenario())


def test_a_unique_violation_raises_conflict(make_settings: Any) -> None:
    async def scenario() -> None:
        uri = f"/inbox/{uuid.uuid4()}.wav"
        async with opened(make_settings()) as database:
            async with database.connection() as conn:
                await _add_rejected(conn, uri)
            with pytest.raises(Conflict) as raised:
                async with database.connection() as conn:
                    await _add_rejected(conn, uri)
            assert isinstance(raised.value.__cause__, psycopg.errors.UniqueViolation)

    asyncio.run(scenario())


def test_a_value_the_column_cannot_hold_raises_value_refused(make_settings: Any) -> None:
    async def scenario() -> None:
        async with opened(make_settings()) as database:
            with pytest.raises(ValueRefused):
                async with database.connection() as conn:
                    await conn.execute("SELECT %s::smallint", (10**6,))

    asyncio.run(scenario())


CATCHES_DRIVER_ERRORS = re.compile(r"psycopg\.(\w*Error|errors)\b|UniqueViolation")


def test_no_module_outside_pipeline_db_catches_the_drivers_errors() -> None:
    root = Path(__file__).resolve().parents[2]
    catching = sorted(
        name
        for package in ("pipeline", "workers", "gateway")
        for path in (root / package).rglob("*.py")
        if not (name := str(path.relative_to(root))).startswith("pipeline/db/")
        and CATCHES_DRIVER_ERRORS.search(path.read_text())
    )
    assert catching == []
