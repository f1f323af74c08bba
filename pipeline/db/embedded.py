"""An embedded PostgreSQL server in the data directory, through ``pgserver``.

Several ai2text processes on one machine (``up`` and a CLI query, say) share the
server: pgserver keeps a list of the processes holding it and only the last one
to leave stops it. We prune processes that died without leaving, so a killed
process never keeps the server alive forever.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import structlog

from pipeline.errors import TransientError
from pipeline.permissions import make_private_dirs, restrict_data_dir
from pipeline.processes import process_alive

log = structlog.get_logger(__name__)


# pg_ctl waits 10 s for the server; a loaded machine gets this many such waits.
START_ATTEMPTS = 3
# How long a restart waits for a postmaster that is still shutting down.
SETTLE_TIMEOUT_S = 30.0


class EmbeddedPostgres:
    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server; return its connection URI."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp.
            warnings.simplefilter("ignore")
            import pgserver

        make_private_dirs(self.pgdata.parent)
        _prune_dead_holders(self.pgdata)
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._server = pgserver.get_server(  # type: ignore[attr-defined]
                    self.pgdata, cleanup_mode="stop"
                )
                break
            except Exception as exc:  # noqa: BLE001 - pgserver raises many kinds; one message
                # pgserver caches the handle before starting; a failed one must not be reused.
                pgserver.PostgresServer._instances.pop(self.pgdata.resolve(), None)  # type: ignore[attr-defined]
                if attempt == START_ATTEMPTS or not isinstance(exc, subprocess.TimeoutExpired):
                    raise TransientError(
                        f"embedded PostgreSQL failed to start in {self.pgdata}: {exc}"
                    ) from exc
                # pg_ctl gives up after 10 s; on a busy machine the server may just be slow.
                log.warning(
                    "embedded database slow to start; trying again", pgdata=str(self.pgdata)
                )
        # pgserver running as root has just made every directory above pgdata 0755.
        restrict_data_dir(self.pgdata.parent, server_dir=self.pgdata)
        uri: str = self._server.get_uri()
        log.info("embedded database ready", pgdata=str(self.pgdata))
        return uri

    def running_uri(self) -> str | None:
        """The URI of a server already running here (``ai2text up``), else ``None``.

        Read from ``postmaster.pid`` alone: no pgserver import, no process registered as
        a holder, nothing started. A one-shot command uses it to answer in milliseconds;
        if the server stops under it, its query fails like any lost connection.
        """
        try:
            lines = (self.pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()
            pid, socket_dir, status = int(lines[0]), lines[4].strip(), lines[7].strip()
        except (OSError, ValueError, IndexError):
            return None  # missing, half-written or from another PostgreSQL version
        if status != "ready" or not socket_dir or not process_alive(pid):
            return None
        return f"postgresql://postgres:@/postgres?host={socket_dir}"

    def is_running(self) -> bool:
        """Whether the postmaster recorded in the data directory is alive and ready."""
        return self._postmaster() == "ready"

    def _postmaster(self) -> Literal["ready", "gone", "busy"]:
        """``busy``: alive but starting or shutting down (not yet safe to start another)."""
        from pgserver.utils import PostmasterInfo

        try:
            info = PostmasterInfo.read_from_pgdata(self.pgdata)
        except (OSError, ValueError, AssertionError):
            return "gone"  # missing, half-written or stale postmaster.pid
        if info is None or not info.is_running():
            return "gone"
        return "ready" if info.status == "ready" else "busy"

    def restart(self) -> str:
        """Start the server again after it died under us; return its (possibly new) URI.

        Only a server this process already holds is restarted, under pgserver's
        inter-process lock, so two processes noticing the same death start it once.
        A postmaster still shutting down is waited for first (pgserver would take it
        for a running server).
        """
        if self._server is None:
            return self.start()
        try:
            with self._server._lock:
                deadline = time.monotonic() + SETTLE_TIMEOUT_S
                while (state := self._postmaster()) == "busy" and time.monotonic() < deadline:
                    time.sleep(0.1)  # an external process's shutdown: nothing to wait on
                if state == "busy":
                    raise TransientError("the old postmaster is still starting or stopping")
                if state == "gone":
                    self._server.ensure_postgres_running()
        except Exception as exc:  # noqa: BLE001 - pg_ctl failures come in many kinds
            raise TransientError(
                f"embedded PostgreSQL failed to restart in {self.pgdata}: {exc}"
            ) from exc
        uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        """Leave the server; it stops when no other live process holds it."""
        if self._server is None:
            return
        _prune_dead_holders(self.pgdata)
        self._server.cleanup()
        self._server = None
        log.info("embedded database released", pgdata=str(self.pgdata))


def _prune_dead_holders(pgdata: Path) -> None:
    holders_file = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(holders_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return
    alive = [pid for pid in pids if pid == os.getpid() or process_alive(pid)]
    if alive != pids:
        with contextlib.suppress(OSError):
            holders_file.write_text(json.dumps(alive))
