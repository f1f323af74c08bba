"""One owner for the audio and job rows, and one definition of their states.

The states are ``StrEnum``s in ``pipeline.db.states``; the schema's ``CHECK``
constraints (read from a freshly migrated database), the API's literals and the
metrics' label lists must say the same. Only ``pipeline.db.audio`` and
``pipeline.db.jobs`` may write the two tables.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import psycopg
import pytest

from gateway.routes import audio as audio_routes
from pipeline.db.migrate import migrate
from pipeline.db.states import AudioState, JobState, Source
from pipeline.sampler import JOB_STATES

ROOT = Path(__file__).resolve().parents[2]
OWNERS = {ROOT / "pipeline" / "db" / "audio.py", ROOT / "pipeline" / "db" / "jobs.py"}
WRITES = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(audio|jobs)\b", re.IGNORECASE)


def _allowed_values(conn: psycopg.Connection[Any], table: str, column: str) -> set[str]:
    """The values a ``CHECK (column IN (...))`` constraint on ``table`` allows."""
    rows = conn.execute(
        "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype = 'c'",
        (table,),
    ).fetchall()
    # PostgreSQL prints IN lists as: ((state = ANY (ARRAY['queued'::text, ...])))
    pattern = re.compile(rf"\(\({column} = ANY \(ARRAY\[([^\]]*)\]\)\)\)")
    found = [m.group(1) for r in rows if (m := pattern.search(r["def"]))]
    assert len(found) == 1, f"expected one CHECK on {table}.{column}, found {rows}"
    return set(re.findall(r"'([^']*)'::text", found[0]))


@pytest.fixture
def schema(db: psycopg.Connection[Any], database_url: str) -> psycopg.Connection[Any]:
    with psycopg.connect(database_url) as conn:
        migrate(conn)
    return db


@pytest.mark.parametrize(
    ("table", "column", "states"),
    [("audio", "state", AudioState), ("jobs", "state", JobState), ("audio", "source", Source)],
)
def test_state_enum_has_exactly_the_values_the_schema_check_allows(
    schema: psycopg.Connection[Any], table: str, column: str, states: type[Any]
) -> None:
    assert _allowed_values(schema, table, column) == {s.value for s in states}


def test_api_state_and_source_literals_are_the_enum_values() -> None:
    assert get_args(audio_routes.AudioState) == tuple(AudioState)
    assert get_args(audio_routes.JobState) == tuple(JobState)
    assert get_args(audio_routes.SourceName) == tuple(Source)


def test_queue_depth_metric_samples_every_job_state() -> None:
    assert JOB_STATES == tuple(JobState)


def test_only_the_audio_and_job_stores_write_audio_and_jobs_rows() -> None:
    writers = {
        str(path.relative_to(ROOT)): [m.group(0) for m in WRITES.finditer(path.read_text())]
        for package in ("pipeline", "workers", "gateway")
        for path in (ROOT / package).rglob("*.py")
        if path not in OWNERS
    }
    assert {path: found for path, found in writers.items() if found} == {}


def test_the_write_pattern_finds_writes_in_the_owners() -> None:
    """The scan above would see a write: the owners themselves are full of them."""
    for owner in OWNERS:
        assert WRITES.search(owner.read_text()), owner
