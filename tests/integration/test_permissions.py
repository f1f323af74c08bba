"""The data directory stays private once the embedded PostgreSQL runs in it.

pgserver running as root starts the server as a ``pgserver`` user and widens every
directory above its data to 0755; this runs the embedded database through the
project's own code, as whoever runs the tests (root here), and checks the modes
that result, that the server's user can still reach its files (and start the
server again), and that nobody else can.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import stat
import subprocess
from pathlib import Path

import psycopg

from ai2text.runtime import build_database
from pipeline.config import DatabaseSettings, Settings
from pipeline.db.database import Database
from pipeline.permissions import ensure_data_dir
from pipeline.storage.filesystem import FilesystemStore
from tests.waiting import eventually


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def embedded_settings(root: Path) -> Settings:
    return Settings(data_dir=root / "data", database=DatabaseSettings())


def assert_private(data_dir: Path) -> None:
    server_dir = data_dir / "pg"
    if server_dir.stat().st_uid == os.geteuid():
        assert mode(data_dir) == 0o700
    else:  # root: the server runs as pgserver, which keeps our group to get through
        assert mode(data_dir) == 0o710
        assert data_dir.stat().st_gid == os.getegid()
    subdirs = [p for p in data_dir.iterdir() if p.is_dir()]
    assert server_dir in subdirs
    assert {p.name: mode(p) for p in subdirs} == {p.name: 0o700 for p in subdirs}


def assert_closed_to_others(data_dir: Path) -> None:
    for path in (data_dir, data_dir / "pg"):
        assert not path.stat().st_mode & stat.S_IRWXO, path
    if os.geteuid() == 0:  # root can try it for real as nobody
        nobody = pwd.getpwnam("nobody")
        listing = subprocess.run(
            ["ls", str(data_dir)],
            user=nobody.pw_uid,
            group=nobody.pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert listing.returncode != 0
        assert "Permission denied" in listing.stderr


def as_server_user(server_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command the way pgserver runs pg_ctl: the server's uid, our group."""
    owner = server_dir.stat().st_uid
    return subprocess.run(
        list(args),
        user=owner if owner != os.geteuid() else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def pg_ctl(server_dir: Path, action: str) -> subprocess.CompletedProcess[str]:
    from pgserver._commands import POSTGRES_BIN_PATH

    return as_server_user(
        server_dir, str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(server_dir), action
    )


def test_data_dir_stays_private_while_the_embedded_database_runs(embedded_root: Path) -> None:
    settings = embedded_settings(embedded_root)
    data_dir = settings.data_dir
    server_dir = data_dir / "pg"
    ensure_data_dir(data_dir)
    db = build_database(settings)

    async def scenario() -> None:
        await db.open(pool_max_size=1)
        try:
            assert_private(data_dir)
            # The server's own user still reaches its data by path (pg_ctl, the log).
            status = pg_ctl(server_dir, "status")
            assert status.returncode == 0, status.stdout + status.stderr
            assert "server is running" in status.stdout
            async with db.connection() as conn:
                await conn.execute("SELECT 1")
            assert_closed_to_others(data_dir)
        finally:
            await db.close()

    asyncio.run(scenario())


def test_objects_are_stored_0600_in_0700_directories(embedded_root: Path) -> None:
    data_dir = embedded_root / "data"
    ensure_data_dir(data_dir)
    store = FilesystemStore(data_dir / "objects")

    store.put_bytes("audio/ab/cd/abcd.wav", b"RIFF....WAVE")
    store.put_bytes("transcripts/ab/abcd.json", b"{}")

    assert mode(data_dir) == 0o700
    for directory in [
        data_dir / "objects",
        data_dir / "objects" / "audio",
        data_dir / "objects" / "audio" / "ab",
        data_dir / "objects" / "audio" / "ab" / "cd",
        data_dir / "objects" / "transcripts" / "ab",
    ]:
        assert mode(directory) == 0o700, directory
    assert mode(data_dir / "objects" / "audio" / "ab" / "cd" / "abcd.wav") == 0o600
    assert mode(data_dir / "objects" / "transcripts" / "ab" / "abcd.json") == 0o600


def test_directories_widened_by_the_database_start_are_tightened_again(
    embedded_root: Path,
) -> None:
    """A second process attaching (pgserver widens again) and a restart in place."""
    settings = embedded_settings(embedded_root)
    data_dir = settings.data_dir
    server_dir = data_dir / "pg"
    ensure_data_dir(data_dir)
    FilesystemStore(data_dir / "objects")
    (data_dir / "objects").chmod(0o755)  # as an older version left it
    first = build_database(settings)
    second: Database = build_database(settings)

    async def scenario() -> None:
        await first.open(pool_max_size=1)
        try:
            data_dir.chmod(0o755)
            await second.open(pool_max_size=1)  # attaches to the running server
            try:
                assert_private(data_dir)
                assert second.embedded is not None
                # The server stops under us and is started in place, through the
                # data directory as it is now.
                pid = int((server_dir / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGINT)
                embedded = second.embedded
                await eventually(
                    lambda: not embedded.is_running(), timeout=30, what="the server to stop"
                )
                uri = await asyncio.to_thread(embedded.restart)
                with psycopg.connect(uri) as conn:
                    assert conn.execute("SELECT 1").fetchone() == (1,)
                assert_private(data_dir)
            finally:
                await second.close()
        finally:
            await first.close()

    asyncio.run(scenario())
