"""The database handle: connection pool, embedded server and migrations.

The driver's errors stop here: connections handed out by :class:`Database` raise
``DatabaseUnavailable`` for a lost connection or an exhausted pool, ``Conflict``
for a unique violation, ``ValueRefused`` for a value PostgreSQL will not store,
and ``DatabaseError`` for anything else the database refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from pipeline.config import DatabaseSettings, Settings
from pipeline.db.embedded import EmbeddedPostgres
from pipeline.db.migrate import migrate
from pipeline.errors import Conflict, DatabaseError, DatabaseUnavailable, ValueRefused

log = structlog.get_logger(__name__)

AsyncConn = psycopg.AsyncConnection[dict[str, object]]


@contextmanager
def translated_errors() -> Iterator[None]:
    """Raise the driver's errors from the body as ai2text's (see the module docstring)."""
    try:
        yield
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(str(exc)) from exc
    except psycopg.DataError as exc:
        raise ValueRefused(str(exc)) from exc
    except psycopg.OperationalError as exc:  # connection lost, server gone, PoolTimeout
        raise DatabaseUnavailable(f"database unavailable: {exc}") from exc
    except psycopg.Error as exc:
        raise DatabaseError(str(exc)) from exc


def build_database(settings: Settings) -> Database:
    """An external PostgreSQL when a URL is configured, else the embedded one."""
    embedded = None
    if settings.database.url is None:
        embedded = EmbeddedPostgres(settings.data_dir / "pg")
    return Database(settings.database, embedded)


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
            raise DatabaseUnavailable(f"database unreachable: {exc}") from exc

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
    async def one_shot(self) -> AsyncIterator[AsyncConn]:
        """One plain connection for a one-shot command (a CLI query), without a pool.

        An embedded server already running (``ai2text up``) is used as it is: nothing
        is started, imported or held. Otherwise the server is started for the command
        and left afterwards, as :meth:`open` and :meth:`close` do. Errors leave the
        block translated, as from :meth:`connection`.
        """
        attached = self.embedded.running_uri() if self.embedded is not None else None
        conn = await self._connect_once(attached) if attached else None
        started = conn is None and self.embedded is not None
        try:
            if conn is None:
                if self.embedded is not None:
                    self.conninfo = await asyncio.to_thread(self.embedded.start)
                await asyncio.to_thread(self._migrate)
                with translated_errors():
                    conn = await self._connect()
            with translated_errors():
                async with conn:
                    yield conn
        finally:
            if started:
                assert self.embedded is not None
                await asyncio.to_thread(self.embedded.stop)

    async def _connect_once(self, conninfo: str) -> AsyncConn | None:
        """A connection to the running server at ``conninfo``, migrated; ``None`` if it is gone."""
        self.conninfo = conninfo
        try:
            await asyncio.to_thread(self._migrate)
            return await self._connect()
        except (DatabaseUnavailable, psycopg.OperationalError):
            return None  # it stopped since we looked: start one as usual

    async def _connect(self) -> AsyncConn:
        conn: AsyncConn = await psycopg.AsyncConnection.connect(
            self.conninfo,
            row_factory=dict_row,
            connect_timeout=int(self.settings.connect_timeout_s),
        )
        return conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConn]:
        """A pooled connection; the driver's errors in the block leave it translated."""
        if self._pool is None:
            raise RuntimeError("database is not open")
        # Translated outside the pool's block, so the pool still sees the driver's error
        # and discards a broken connection.
        with translated_errors():
            async with self._pool.connection() as conn:
                yield conn

    async def listen_connection(self) -> AsyncConn:
        """A dedicated autocommit connection for LISTEN (not from the pool).

        Raises the driver's errors, as its reads do: whoever listens on it (the
        notification hub) handles them itself.
        """
        conn: AsyncConn = await psycopg.AsyncConnection.connect(
            self.conninfo,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=int(self.settings.connect_timeout_s),
        )
        return conn
