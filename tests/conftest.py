"""Shared fixtures: a real PostgreSQL (pgserver) per session, a fresh database per test."""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipeline.config import Settings

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One embedded PostgreSQL for the whole test session (stopped and deleted at the end).

    Its data lives outside pytest's private (0700) temp tree: as root, pgserver runs
    the server as another user, who must be able to reach the directory.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        root = Path(tempfile.mkdtemp(prefix="ai2text-test-pg-"))
        server = pgserver.get_server(root / "data", cleanup_mode="delete")
    yield server
    server.cleanup()
    shutil.rmtree(root, ignore_errors=True)


def public_tempdir(prefix: str) -> Path:
    """A temp dir outside pytest's private (0700) tree.

    As root, pgserver runs the embedded server as another user, who must be able to
    reach its data directory; pytest re-locks its own temp root whenever a session
    starts, which would cut a running server off.
    """
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture
def embedded_root() -> Iterator[Path]:
    """A private working directory for one ``ai2text up`` on the embedded database."""
    root = public_tempdir("ai2text-e2e-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def fresh_database(pg_server: Any) -> Iterator[str]:
    """Create a new, empty database on the session server; drop it when resumed.

    Use with ``yield from`` in a fixture of whatever scope the database should have.
    """
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = pg_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.get_uri(database=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_server: Any) -> Iterator[str]:
    """A new, empty database for one test; dropped afterwards."""
    yield from fresh_database(pg_server)


@pytest.fixture(scope="module")
def module_database_url(pg_server: Any) -> Iterator[str]:
    """One database for a module's shared, long-running service."""
    yield from fresh_database(pg_server)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A real S3 wire protocol (moto) on 127.0.0.1 for one test module: ``host:port``."""
    from tests.integration.s3_server import moto_s3_server

    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str) -> Any:
    """Settings pointing at the test database and a private data dir and inbox."""

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "database": {"url": database_url},
            "watch": {"inbox": tmp_path / "inbox", "quiet_period_s": 0.5, "min_free_bytes": 0},
            "queue": {
                "lease_s": 5,
                "poll_interval_s": 1,
                "backoff_base_s": 0.1,
                "backoff_max_s": 0.5,
            },
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        return Settings(**base)

    return make


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A plain autocommit connection for assertions."""
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn
