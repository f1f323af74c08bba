"""Typed results for the small aggregate queries (counts and sums by a key, one number).

The pool's default rows are ``dict[str, object]``; these helpers read through psycopg's
``class_row`` instead, so callers get ``dict[str, int]`` or ``float`` without casts. The
query names its columns ``key`` and ``n`` (counts), ``key`` and ``value`` (amounts), or
``value`` (one number).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from psycopg import sql
from psycopg.rows import class_row

from pipeline.db.database import AsyncConn

Query: TypeAlias = str | sql.Composed
Params: TypeAlias = Sequence[Any] | Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class _Count:
    key: str
    n: int


@dataclass(frozen=True, slots=True)
class _Amount:
    key: str
    value: float | None


@dataclass(frozen=True, slots=True)
class _Value:
    value: Any


async def counts(conn: AsyncConn, query: Query, params: Params = None) -> dict[str, int]:
    """``SELECT <key> AS key, count(*) AS n ... GROUP BY ...`` as a dict."""
    async with conn.cursor(row_factory=class_row(_Count)) as cur:
        await cur.execute(query, params)
        return {str(r.key): int(r.n) for r in await cur.fetchall()}


async def amounts(conn: AsyncConn, query: Query, params: Params = None) -> dict[str, float]:
    """``SELECT <key> AS key, <number> AS value ...`` as a dict (NULL counts as 0)."""
    async with conn.cursor(row_factory=class_row(_Amount)) as cur:
        await cur.execute(query, params)
        return {str(r.key): float(r.value or 0.0) for r in await cur.fetchall()}


async def one_value(conn: AsyncConn, query: Query, params: Params = None) -> Any:
    """The ``value`` column of the first row, or ``None`` when there is no row."""
    async with conn.cursor(row_factory=class_row(_Value)) as cur:
        await cur.execute(query, params)
        row = await cur.fetchone()
        return None if row is None else row.value
