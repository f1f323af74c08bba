"""The database handle: connection pool, embedded server and migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from pipeline.config import DatabaseSettings
from pipeline.db.embedded import EmbeddedPostgres
from pipeline.db.migrate import migrate
from pipeline.errors import TransientError

log = structlog.get_logger(__name__)

AsyncConn = psycopg.AsyncConnection[dict[str, object]]


class Database:
    """Owns the pool (and, with no URL configured, the embedded server)."""

    def __init__(self, settings: DatabaseSettings, embedded: EmbeddedPostgres | None) -> None:
        self.settings = settings
        self.embedded = embedded
        self.conninfo = settings.url.get_secret_value() if settings.url else ""
        self._pool: AsyncConnectionPool[AsyncConn] | None = None

    async def open(self, *, run_migrations: bool = True, pool_max_size: int | None = None) -> None:
        if self.embedded is not None:
            self.conninfo = await asyncio.to_thread(self.embedded.start)
        if run_migrations:
            await asyncio.to_thread(self._migrate)
        self._pool = AsyncConnectionPool(
            self.conninfo,
            min_size=min(self.settings.pool_min_size, pool_max_size or self.settings.pool_max_size),
            max_size=pool_max_size or self.settings.pool_max_size,
            kwargs={
                "row_factory": dict_row,
                "connect_timeout": int(self.settings.connect_timeout_s),
            },
            open=False,
            timeout=self.settings.connect_timeout_s * 3,
        )
        await self._pool.open(wait=True, timeout=self.settings.connect_timeout_s * 3)

    def _migrate(self) -> None:
        try:
            with psycopg.connect(
                self.conninfo, connect_timeout=int(self.settings.connect_timeout_s)
            ) as conn:
                migrate(conn)
        except psycopg.OperationalError as exc:
            raise TransientError(f"database unreachable: {exc}") from exc

    def point_at(self, conninfo: str) -> None:
        """Use ``conninfo`` for new connections (the embedded server came back elsewhere)."""
        if conninfo == self.conninfo:
            return
        self.conninfo = conninfo
        if self._pool is not None:
            self._pool.conninfo = conninfo

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConn]:
        if self._pool is None:
            raise RuntimeError("database is not open")
        async with self._pool.connection() as conn:
            yield conn

    async def listen_connection(self) -> AsyncConn:
        """A dedicated autocommit connection for LISTEN (not from the pool)."""
        conn: AsyncConn = await psycopg.AsyncConnection.connect(
            self.conninfo,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=int(self.settings.connect_timeout_s),
        )
        return conn
