"""Handing a frozen dataset version to a trainer: a local command or an HTTP endpoint.

``LAUNCHERS`` is the table of launchers by kind; each takes its own settings
(``training.launch``, a union told apart by ``kind`` in :mod:`pipeline.config`)
and implements :class:`Launcher`. Adding a launcher is its settings model in that
union and one entry here. ``command`` runs an argv template without a shell, with a timeout and the
environment from config; its output is streamed to a log file that is copied
to object storage as it grows and at the end. ``http`` POSTs a description of
the version, retrying 5xx and network errors with backoff, and records the
remote run id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import httpx
import structlog

from pipeline.config import CommandLauncherSettings, HttpLauncherSettings, LauncherSettings
from pipeline.datasets.freeze import FrozenVersion
from pipeline.storage import ObjectStore

log = structlog.get_logger(__name__)

_ENV_PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")


@dataclass(frozen=True, slots=True)
class LaunchOutcome:
    succeeded: bool
    error: str | None = None
    exit_code: int | None = None
    http_status: int | None = None
    remote_id: str | None = None


@dataclass(frozen=True, slots=True)
class RunContext:
    run_id: str
    version: FrozenVersion
    dataset_dir: str
    run_dir: Path
    log_key: str
    local_dir: Path | None = None
    # The local directory of the model the workers run (``{base_model_dir}``): the
    # promoted model's cached copy, else ``asr.model``'s; "" when not resolved.
    base_model_dir: str = ""


class Launcher(Protocol):
    """Hands one run's frozen version to a trainer and says how it ended."""

    # Whether the run's output is copied to ``ctx.log_key`` (recorded on the run).
    writes_log: bool

    async def launch(self, store: ObjectStore, ctx: RunContext) -> LaunchOutcome: ...

    def after_failure(self, ctx: RunContext) -> None:
        """After a failed or stopped run: leave nothing that looks like a usable result."""


class CommandLauncher:
    """Runs ``training.launch.command`` here; a failed run's directory is marked failed."""

    writes_log = True

    def __init__(self, settings: CommandLauncherSettings) -> None:
        self.settings = settings

    async def launch(self, store: ObjectStore, ctx: RunContext) -> LaunchOutcome:
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        log_path = ctx.run_dir / "launcher.log"
        return await run_command(self.settings, store, ctx, log_path=log_path)

    def after_failure(self, ctx: RunContext) -> None:
        mark_failed_artefacts(ctx.run_dir)


class HttpLauncher:
    """POSTs the version to ``training.launch.http_url``; the trainer keeps its own files."""

    writes_log = False

    def __init__(self, settings: HttpLauncherSettings) -> None:
        self.settings = settings

    async def launch(self, store: ObjectStore, ctx: RunContext) -> LaunchOutcome:
        return await post_http(self.settings, store, ctx)

    def after_failure(self, ctx: RunContext) -> None:
        return None


# Every launcher, by the ``kind`` of its settings.
LAUNCHERS: dict[str, Callable[[Any], Launcher]] = {
    "command": CommandLauncher,
    "http": HttpLauncher,
}


def launcher_for(settings: LauncherSettings) -> Launcher:
    """The launcher that ``settings`` (one member of ``training.launch``) configures."""
    return LAUNCHERS[settings.kind](settings)


def placeholders(ctx: RunContext, store: ObjectStore) -> dict[str, str]:
    """Manifests in the materialised copy when there is one, else in object storage."""
    prefix = ctx.version.prefix

    def where(name: str) -> str:
        if ctx.local_dir is not None:
            return str(ctx.local_dir / name)
        return store.uri(f"{prefix}/{name}")

    return {
        "dataset_dir": ctx.dataset_dir,
        "train_manifest": where("train.jsonl"),
        "dev_manifest": where("dev.jsonl"),
        "test_manifest": where("test.jsonl"),
        "run_id": ctx.run_id,
        "run_dir": str(ctx.run_dir),
        "version": str(ctx.version.version),
        "tenant": ctx.version.tenant,
        # The version's languages, comma-separated ("vi", "de,en").
        "languages": ",".join(ctx.version.languages),
        "base_model_dir": ctx.base_model_dir,
    }


def uses_placeholder(settings: LauncherSettings, name: str) -> bool:
    """Whether the command template names ``{name}`` (an HTTP launch names none)."""
    if not isinstance(settings, CommandLauncherSettings):
        return False
    return any("{" + name + "}" in arg for arg in settings.command)


def store_root(store: ObjectStore) -> str:
    """Where object keys are found: the store's root directory or ``s3://bucket/``."""
    probe = "audio"
    return store.uri(probe)[: -len(probe)]


def render_argv(template: tuple[str, ...], values: dict[str, str]) -> list[str]:
    """Fill ``{name}`` placeholders in each argument; unknown names are an error."""
    try:
        return [arg.format_map(values) for arg in template]
    except (KeyError, ValueError, IndexError) as exc:
        raise ValueError(f"bad placeholder in training.command: {exc}") from exc


async def run_command(
    training: CommandLauncherSettings, store: ObjectStore, ctx: RunContext, *, log_path: Path
) -> LaunchOutcome:
    if not training.command:
        return LaunchOutcome(False, error="training.command is empty")
    try:
        argv = render_argv(training.command, placeholders(ctx, store))
    except ValueError as exc:
        return LaunchOutcome(False, error=str(exc))
    env = {k: os.environ[k] for k in _ENV_PASSED_THROUGH if k in os.environ}
    env.update(training.command_env)
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    with _open_log(log_path) as log_file:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=ctx.run_dir,
                start_new_session=True,
            )
        except OSError as exc:
            return LaunchOutcome(False, error=f"could not start {argv[0]}: {exc.strerror}")
        log.info("training command started", run_id=ctx.run_id, pid=proc.pid, argv0=argv[0])
        try:
            code = await asyncio.wait_for(
                _wait_copying_log(proc, store, log_path, ctx.log_key), training.command_timeout_s
            )
        except asyncio.CancelledError:
            # The orchestrator is stopping: the trainer must not outlive its recorded run.
            _kill_group(proc)
            raise
        except TimeoutError:
            _kill_group(proc)
            await proc.wait()
            return LaunchOutcome(
                False,
                error=f"timed out after {training.command_timeout_s:g} s",
                exit_code=proc.returncode,
            )
        finally:
            _copy_log(store, log_path, ctx.log_key)
    if code != 0:
        return LaunchOutcome(False, error=f"trainer exited with code {code}", exit_code=code)
    return LaunchOutcome(True, exit_code=code)


async def _wait_copying_log(
    proc: asyncio.subprocess.Process, store: ObjectStore, log_path: Path, log_key: str
) -> int:
    while True:
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(proc.wait(), 5.0)
        await asyncio.to_thread(_copy_log, store, log_path, log_key)


def _open_log(path: Path) -> BinaryIO:
    return open(path, "wb")  # noqa: SIM115 - the caller's with-block closes it


def _copy_log(store: ObjectStore, log_path: Path, log_key: str) -> None:
    try:
        with open(log_path, "rb") as f:
            store.put_stream(log_key, f, log_path.stat().st_size, "text/plain")
    except (OSError, ValueError) as exc:
        log.warning("could not copy the training log", error=str(exc))


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def mark_failed_artefacts(run_dir: Path) -> Path | None:
    """Rename a failed run's directory so nothing mistakes it for a good checkpoint."""
    if not run_dir.exists():
        return None
    failed = run_dir.with_name(run_dir.name + ".FAILED")
    shutil.rmtree(failed, ignore_errors=True)
    run_dir.rename(failed)
    (failed / "FAILED").write_text("this run failed; its files are not a usable checkpoint\n")
    return failed


async def post_http(
    training: HttpLauncherSettings, store: ObjectStore, ctx: RunContext, *, transport: Any = None
) -> LaunchOutcome:
    if not training.http_url:
        return LaunchOutcome(False, error="training.http_url is not set")
    prefix = ctx.version.prefix
    body = {
        "run_id": ctx.run_id,
        "dataset": {
            "tenant": ctx.version.tenant,
            "languages": list(ctx.version.languages),
            "name": ctx.version.name,
            "version": ctx.version.version,
            "dir": ctx.dataset_dir,
            "manifests": {
                name: store.uri(f"{prefix}/{name}.jsonl") for name in ("train", "dev", "test")
            },
            "metadata": store.uri(f"{prefix}/metadata.jsonl"),
            "description": store.uri(f"{prefix}/dataset.json"),
            # Manifests name audio by object key: a key's location is this plus the key.
            "audio_root": store_root(store),
            "audio_hours": ctx.version.audio_hours,
            "utterance_hours": ctx.version.utterance_hours,
            "stats": ctx.version.stats,
            "manifest_sha256": ctx.version.manifest_sha256,
        },
    }
    headers = {"Idempotency-Key": ctx.run_id}
    if training.http_token is not None:
        headers["Authorization"] = f"Bearer {training.http_token.get_secret_value()}"
    timeout = httpx.Timeout(training.http_timeout_s)
    last_error = "no attempt made"
    status: int | None = None
    async with httpx.AsyncClient(timeout=timeout, transport=transport) as client:
        for attempt in range(1, training.http_attempts + 1):
            try:
                response = await client.post(training.http_url, json=body, headers=headers)
                status = response.status_code
                if 200 <= status < 300:
                    return LaunchOutcome(True, http_status=status, remote_id=_remote_id(response))
                last_error = f"trainer answered HTTP {status}"
                if 300 <= status < 400:
                    last_error += " (a redirect: point training.http_url at the final URL)"
                if response.status_code < 500:
                    break  # the trainer refused the request: retrying will not help
            except httpx.HTTPError as exc:
                last_error = f"could not reach the trainer: {type(exc).__name__}"
            if attempt < training.http_attempts:
                await asyncio.sleep(min(30.0, 0.5 * 2 ** (attempt - 1)))
    return LaunchOutcome(False, error=last_error, http_status=status)


def _remote_id(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    if isinstance(data, dict):
        for key in ("run_id", "id", "job_id"):
            if isinstance(data.get(key), str | int):
                return str(data[key])
    return None
