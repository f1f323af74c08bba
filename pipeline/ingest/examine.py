"""Probe and hash hot-folder files in a small pool of processes, off the watcher's core.

Decoding a file to check it (PyAV) and hashing it are CPU work: in the watcher's one
Python process they capped a flood at one core. Here they run in up to ``workers``
child processes (spawned on first use), each of which opens the file itself without
following links and checks, on its open handle, that it is still the version judged
quiet. Results and refusals come back as plain data (a pickled exception would lose its
``code``). A child that dies (FFmpeg crashing on a hostile file, the OOM killer) breaks
the pool and fails every file in it: each of those is tried again alone in a pool of
one, and a file that brings down that lone process twice is refused with a reason
instead of being retried forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import io
import multiprocessing
import os
import signal
import stat
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import BinaryIO, Literal

import structlog

from pipeline.config import ValidationSettings
from pipeline.errors import RejectCode, RejectedInput, TransientError
from pipeline.ingest.core import Examined, SourceChanged, sha256_of
from pipeline.ingest.stability import Fingerprint
from pipeline.ingest.validation import extension_of, validate
from pipeline.ingest.wav import pcm_wav_info
from pipeline.media import IncompleteAudio

log = structlog.get_logger(__name__)

# A file whose examination, alone in its pool, kills the child this often is refused.
CRASHES_BEFORE_REFUSAL = 2
# How long shutdown waits for a child to finish its file before terminating it.
SHUTDOWN_GRACE_S = 5.0
# Plain PCM WAVs up to this size are examined in the watcher itself (``examine_here``).
HERE_MAX_BYTES = 1024 * 1024


class ExaminerCrashed(TransientError):
    """The process examining a file died; the file is tried again."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refusal as plain data, to cross the process boundary with its code."""

    kind: Literal["rejected", "incomplete", "changed"]
    reason: str
    code: RejectCode = "invalid"


def examine_file(
    path: str, fingerprint: Fingerprint, name: str, validation: ValidationSettings
) -> Examined | Refusal:
    """Runs in a child: open ``path`` (no links), check it is ``fingerprint``, probe, hash."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return Refusal("changed", f"{name} cannot be opened again: {exc.strerror}")
    with os.fdopen(fd, "rb") as source:
        st = os.fstat(fd)
        now = Fingerprint(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino)
        if not stat.S_ISREG(st.st_mode) or now != fingerprint:
            return Refusal("changed", f"{name} changed before it was examined")
        try:
            info = validate(source, name=name, size=st.st_size, settings=validation)
            sha256 = sha256_of(source, st.st_size)
        except IncompleteAudio as exc:
            return Refusal("incomplete", exc.reason, exc.code)
        except RejectedInput as exc:
            return Refusal("rejected", exc.reason, exc.code)
        except SourceChanged as exc:
            return Refusal("changed", str(exc))
    return Examined(info=info, sha256=sha256)


def examine_here(
    source: BinaryIO, size: int, name: str, validation: ValidationSettings
) -> Examined | None:
    """A small plain PCM WAV, validated and hashed in this process; None: use the pool.

    Such a file needs no decoder (``wav.pcm_wav_info``), so there is nothing to isolate
    from a crash, and sending it to a child would cost more than examining it. Raises
    what ``validate`` raises. ``source`` is the handle already checked to be the
    version judged quiet; it is left at 0.
    """
    if size > HERE_MAX_BYTES or extension_of(name) != "wav":
        return None
    source.seek(0)
    data = source.read(size + 1)
    source.seek(0)
    if len(data) != size:
        raise SourceChanged(f"{name} changed size while it was read")
    buffer = io.BytesIO(data)
    if pcm_wav_info(buffer, size, max_duration_s=validation.max_duration_s) is None:
        return None
    info = validate(buffer, name=name, size=size, settings=validation)
    return Examined(info=info, sha256=hashlib.sha256(data).hexdigest())


# prctl(2) option: the signal a process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Runs first in each child: end it when the watcher dies, even by SIGKILL.

    A pool's child holds both ends of its own task pipe, so it never sees the watcher
    go and would wait for work forever, one orphan per child per crash.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before the line above took effect
        os._exit(1)


class Examiner:
    """The pool of examining processes of one hot folder (``workers`` of them)."""

    def __init__(
        self,
        workers: int,
        validation: ValidationSettings,
        *,
        function: Callable[[str, Fingerprint, str, ValidationSettings], Examined | Refusal] = (
            examine_file
        ),
    ) -> None:
        """``function`` runs in the children (``examine_file``; tests pass a faulty one).

        With ``examine_file``, small plain PCM WAVs are examined in this process
        (``examine_here``) when the caller hands over its open ``source``.
        """
        self.workers = workers
        self.validation = validation
        self.function = function
        self.here_first = function is examine_file
        self._pool: ProcessPoolExecutor | None = None
        # A pool that breaks fails every file in it: those are examined again one at a
        # time in a pool of one (``_alone``), where a crash can only be the file's own.
        self._alone: ProcessPoolExecutor | None = None
        self._alone_lock = asyncio.Lock()
        self._suspects: dict[tuple[str, Fingerprint], int] = {}  # crashes while alone
        self._closed = False

    def _executor(self, workers: int) -> ProcessPoolExecutor:
        if self._closed:
            raise ExaminerCrashed("the watcher is stopping")
        # spawn: the watcher runs threads (asyncio.to_thread), which fork does not mix with.
        return ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )

    async def examine(
        self, path: str, fingerprint: Fingerprint, name: str, *, source: BinaryIO | None = None
    ) -> Examined:
        """Probe and hash ``path``: raise what ``validate`` would, or a ``TransientError``.

        ``source``: the caller's handle on ``path``, already checked to be ``fingerprint``.
        """
        if source is not None and self.here_first:
            here = examine_here(source, fingerprint.size, name, self.validation)
            if here is not None:
                return here
        key = (path, fingerprint)
        if key in self._suspects:
            result = await self._examine_alone(key, name)
        else:
            if self._pool is None:
                self._pool = self._executor(self.workers)
            pool = self._pool
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    pool, self.function, path, fingerprint, name, self.validation
                )
            except BrokenProcessPool as exc:
                if self._pool is pool:
                    self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
                self._suspects.setdefault(key, 0)
                log.warning("the process examining files died; trying again", file=name)
                raise ExaminerCrashed(f"the process examining {name} died") from exc
        if isinstance(result, Examined):
            return result
        if result.kind == "incomplete":
            raise IncompleteAudio(result.reason, code=result.code)
        if result.kind == "rejected":
            raise RejectedInput(result.reason, code=result.code)
        raise SourceChanged(result.reason)

    async def _examine_alone(self, key: tuple[str, Fingerprint], name: str) -> Examined | Refusal:
        """Examine a file that was in a pool when it broke, with no other file beside it."""
        async with self._alone_lock:
            if self._alone is None:
                self._alone = self._executor(1)
            pool = self._alone
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    pool, self.function, *key, name, self.validation
                )
            except BrokenProcessPool as exc:
                if self._alone is pool:
                    self._alone = None
                pool.shutdown(wait=False, cancel_futures=True)
                crashes = self._suspects[key] = self._suspects.get(key, 0) + 1
                if crashes >= CRASHES_BEFORE_REFUSAL:
                    del self._suspects[key]
                    raise RejectedInput(
                        f"examining the file alone made the audio decoder's process die"
                        f" {crashes} times (a corrupt or hostile file)",
                        code="undecodable",
                    ) from exc
                log.warning("the process examining the file alone died; trying again", file=name)
                raise ExaminerCrashed(f"the process examining {name} alone died") from exc
        self._suspects.pop(key, None)
        return result

    def close(self) -> None:
        """Stop the children: let each finish its file briefly, then terminate it.

        Files still being examined then fail as ``ExaminerCrashed`` (tried again at the
        next start); nothing new is examined after this.
        """
        self._closed = True
        pools = [p for p in (self._pool, self._alone) if p is not None]
        self._pool = self._alone = None
        for pool in pools:
            _stop(pool)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut ``pool`` down; terminate a child still busy after ``SHUTDOWN_GRACE_S``."""
    # The executor keeps its processes private; a child stuck in a hostile file
    # must not hold up the watcher's exit, so they are joined and ended here.
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        proc.join(SHUTDOWN_GRACE_S)
        if proc.is_alive():
            proc.terminate()
            proc.join(SHUTDOWN_GRACE_S)
    with contextlib.suppress(Exception):
        pool.shutdown(wait=True)
