"""The ``ai2text`` command line.

Exit codes: 0 done, 1 failed, 2 the configuration or the command line cannot work
(one line on stderr says what), 130 interrupted, 141 output closed by its reader
(``ai2text ls | head -1``), as a shell reports a process ended by SIGPIPE.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ai2text import filters
from pipeline.errors import Ai2TextError, ConfigError

# Everything heavier (settings, database, roles, models) is imported by the command
# that uses it: ``ai2text --version`` and ``--help`` answer without loading them.
if TYPE_CHECKING:
    from pipeline.config import Settings

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130
EXIT_OUTPUT_CLOSED = 128 + signal.SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    from pipeline.formats import cli_formats

    parser = argparse.ArgumentParser(
        prog="ai2text", description="Drop audio in a folder, get transcripts."
    )
    parser.add_argument("--config", type=Path, help="TOML settings file (env vars win)")
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="print the version of ai2text and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "up",
        help="run every role in one process (watcher, worker, gateway, S3, orchestrator)",
        description=UP_DESCRIPTION,
        epilog=UP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker = sub.add_parser("worker", help="run the ASR worker role only")
    worker.add_argument(
        "--device",
        help="auto, cpu, cuda or cuda:N (one worker per GPU); overrides AI2TEXT_ASR__DEVICE",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        help="jobs this process transcribes at once; overrides AI2TEXT_ASR__CONCURRENCY",
    )
    sub.add_parser("watch", help="run the hot-folder watcher role only")
    sub.add_parser("gateway", help="run the HTTP gateway (S3 webhook receiver) only")
    sub.add_parser("s3", help="run S3 ingestion only: event processing, reconcile, listeners")
    sub.add_parser("orchestrator", help="run the training orchestrator only")
    dataset = sub.add_parser("dataset", help="dataset versions")
    dataset_sub = dataset.add_subparsers(dest="dataset_command", required=True)
    stats = dataset_sub.add_parser(
        "stats", help="eligible hours now (per language and dataset) and every frozen version"
    )
    stats.add_argument("--tenant", help="this tenant's hours and versions only (default: all)")
    stats.add_argument("--json", action="store_true")
    freeze = dataset_sub.add_parser("freeze", help="freeze a new immutable version now")
    freeze.add_argument(
        "--tenant", default="default", help="whose audio the version holds (default: default)"
    )
    freeze.add_argument(
        "--language",
        metavar="LANGS",
        help="the version's language (vi) or languages (en,de); default: the one language"
        " dataset the tenant has audio for",
    )
    freeze.add_argument(
        "--materialize",
        type=Path,
        metavar="DIR",
        help="also copy its audio to DIR with manifests pointing there",
    )
    freeze.add_argument("--json", action="store_true")
    runs = sub.add_parser("runs", help="training runs, newest first")
    runs.add_argument("--json", action="store_true")
    ls = sub.add_parser("ls", help="recent audio with its state")
    ls.add_argument("-n", "--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true", help="one JSON document on stdout")
    ls.add_argument(
        "--review", action="store_true", help="only audio whose transcript is in review"
    )
    ls.add_argument(
        "--state",
        action="append",
        type=filters.audio_states,
        metavar="STATE",
        help="only audio in this state (repeat, or a comma list): "
        + ", ".join(filters.AUDIO_STATES),
    )
    ls.add_argument(
        "--since",
        type=filters.point_in_time,
        metavar="WHEN",
        help="only audio added since WHEN: an ISO date or time (local unless it has an offset)"
        " or a time ago (30m, 2h, 3d, 1w)",
    )
    ls.add_argument(
        "--until", type=filters.point_in_time, metavar="WHEN", help="only audio added before WHEN"
    )
    search = sub.add_parser("search", help="full-text search over transcripts")
    search.add_argument("query", help='words to find; "a phrase", or, -word (websearch syntax)')
    search.add_argument("-n", "--limit", type=int, default=20, help="most matches (default 20)")
    search.add_argument("--json", action="store_true", help="one JSON document on stdout")
    retry = sub.add_parser(
        "retry", help="put a dead or failed job back in the queue with fresh attempts"
    )
    retry.add_argument("job", help="a job id, or an audio id (or unique prefix) whose job it is")
    retry.add_argument("--json", action="store_true", help="one JSON document on stdout")
    from ai2text import correct_cli

    correct_cli.add_parser(sub)
    show = sub.add_parser("show", help="one audio file and its transcript")
    show.add_argument("id", help="audio id or a unique prefix of it")
    show.add_argument("--format", choices=cli_formats(), default="timestamps")
    show.add_argument("--json", action="store_true", help="same as --format json")
    show.add_argument(
        "--follow",
        action="store_true",
        help="print the state and progress as they change, then the transcript; exit when"
        " the audio is done (0 once transcribed)",
    )
    token = sub.add_parser("token", help="mint a JWT for the gateway from the local private key")
    token.add_argument("--subject", "--sub", default="local-user", help="the token's sub claim")
    token.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        help="a scope to grant (repeat); default: audio:read audio:write transcripts:read",
    )
    token.add_argument("--tenant", help="limit the token to this tenant")
    token.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds")
    from ai2text import models_cli

    models_cli.add_parser(sub)
    status = sub.add_parser("status", help="counts by state, queue depth, hours transcribed")
    status.add_argument("--json", action="store_true", help="one JSON document on stdout")
    from ai2text import webhooks_cli

    webhooks_cli.add_parser(sub)
    from ai2text import console_cli

    console_cli.add_parser(sub)
    return parser


UP_DESCRIPTION = """\
Run every role in one process until Ctrl-C or SIGTERM:
  watcher       takes audio dropped in the inbox (AI2TEXT_WATCH__INBOX)
  worker(s)     transcribe queued jobs (AI2TEXT_ASR__MODEL, __DEVICE, __CONCURRENCY)
  gateway       the HTTP API on AI2TEXT_GATEWAY__HOST:__PORT (127.0.0.1:8000), unless
                AI2TEXT_GATEWAY__ENABLED=false
  S3 roles      bucket events, reconcile and listen streams, only with AI2TEXT_S3_SOURCES
  orchestrator  dataset versions and training runs, only with AI2TEXT_TRAINING__ENABLED=true
  deliveries    signed webhooks (AI2TEXT_DELIVERIES__WEBHOOKS or POST /v1/webhooks) and
                transcript files, from the event outbox (ai2text webhooks lists them)
"""

UP_EPILOG = """\
main settings (environment, or the --config TOML file):
  AI2TEXT_DATA_DIR           database, audio and keys (default ./data)
  AI2TEXT_DATABASE__URL      an external PostgreSQL (default: embedded in the data dir)
  AI2TEXT_WATCH__INBOX       the watched folder (default ./inbox)
  AI2TEXT_ASR__MODEL         base, tiny.en, a CTranslate2 directory or a Hugging Face id
  AI2TEXT_ASR__DEVICE        auto, cpu, cuda or cuda:N
  AI2TEXT_ASR__CONCURRENCY   jobs transcribed at once
  AI2TEXT_METRICS__PORT      serve /metrics, /healthz and /readyz on this port
every setting is an AI2TEXT_* variable: see the Configuration table in README.md
"""


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, read only when asked."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any, **__: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("ai2text")
        except PackageNotFoundError:
            found = "unknown (not installed)"
        sys.stdout.write(f"ai2text {found}\n")  # stdout, as argparse's own version action
        parser.exit()


def build_bare_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="ai2text")


def _asks_for_version(argv: Sequence[str]) -> bool:
    """``--version`` among the options before the command, as argparse would take it."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] == "--version":
            return True
        i += 2 if argv[i] == "--config" else 1
    return False


def _command_of(argv: Sequence[str]) -> str | None:
    """The command word after the options, as argparse would take it."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] == "--config" else 1
    return argv[i] if i < len(argv) else None


def main(argv: Sequence[str] | None = None) -> int:
    """The ``ai2text`` program: a one-shot command ends the process when it is done.

    Tearing the interpreter down (every module, pydantic's and psycopg's included)
    takes a tenth of a second that a query's user would wait for, so after a query
    ``main`` runs the exit handlers, flushes and leaves with ``os._exit``. Callers
    that go on afterwards (tests in one process) use :func:`run`.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    code = run(argv)
    if _command_of(argv) in QUERY_COMMANDS:
        atexit._run_exitfuncs()  # what a normal exit runs (logging's flush among them)
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    return code


def run(argv: Sequence[str] | None = None) -> int:
    """The command for ``argv``; its exit code (the process goes on)."""
    try:
        try:
            code = _run(argv)
        finally:  # also after --help: a closed reader shows here, not at interpreter exit
            sys.stdout.flush()
    except BrokenPipeError:
        _discard_closed_output()
        code = EXIT_OUTPUT_CLOSED
    _exit_past_stuck_threads(code)
    return code


def _run(argv: Sequence[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _asks_for_version(argv):  # before the parser, whose --format choices load settings
        _Version(["--version"], "version")(build_bare_parser(), argparse.Namespace(), None)
    args = build_parser().parse_args(argv)
    import asyncio

    from pipeline.config import load_settings
    from pipeline.logs import configure_logging

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"ai2text: invalid configuration: {exc}\n")
        return EXIT_CONFIG
    level = settings.log_level
    if args.command in QUERY_COMMANDS and level in ("debug", "info"):
        level = "warning"  # queries print results, not the embedded database's comings and goings
    configure_logging(fmt=settings.log_format, level=level)
    command = COMMANDS[args.command]
    try:
        return asyncio.run(command(settings, args))
    except ConfigError as exc:
        sys.stderr.write(f"ai2text: {exc}\n")
        return EXIT_CONFIG
    except Ai2TextError as exc:
        sys.stderr.write(f"ai2text: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _discard_closed_output() -> None:
    """Point stdout and stderr at /dev/null where their reader has gone.

    Whatever is still buffered is flushed again at exit; without this, that flush
    fails too and Python prints an "Exception ignored" traceback.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BrokenPipeError:
                os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


def _exit_past_stuck_threads(code: int) -> None:
    """A cancelled transcription may still be inside the model; do not wait for it."""
    if any(t.name.startswith("asr-job-") and t.is_alive() for t in threading.enumerate()):
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


async def run_roles(settings: Settings, roles: set[Any], *, exclusive: bool = False) -> int:
    from ai2text.runtime import run_roles as run

    return await run(settings, roles, exclusive=exclusive)


async def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    return await run_roles(
        settings, {"watch", "worker", "gateway", "s3", "orchestrator"}, exclusive=True
    )


async def cmd_orchestrator(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.training.enabled:  # it still delivers webhooks
        sys.stderr.write(
            "ai2text: training is disabled (AI2TEXT_TRAINING__ENABLED=true enables it);"
            " delivering webhooks only\n"
        )
    return await run_roles(settings, {"orchestrator"})


async def cmd_dataset(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.datasets import commands
    from pipeline.datasets.languages import parse_languages

    if args.dataset_command == "stats":
        result = await _query(settings, lambda c: commands.dataset_stats(c, settings, args.tenant))
    else:
        result = await _with_store(
            settings,
            lambda db, store: commands.freeze_now(
                settings,
                db,
                store,
                args.materialize,
                args.tenant,
                None if args.language is None else parse_languages(args.language),
            ),
        )
    if args.json:
        _print_json(result)
    else:
        sys.stdout.write(commands.describe(result))
    return 0


async def cmd_runs(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.datasets.queries import list_runs

    rows = await _query(settings, list_runs)
    if args.json:
        _print_json(rows)
        return 0
    sys.stdout.write(f"{'RUN':8}  {'STATE':9}  {'DATASET':14}  {'LAUNCHER':8}  DETAIL\n")
    for r in rows:
        detail = (
            r["error"]
            or r["remote_id"]
            or (f"exit {r['exit_code']}" if r["exit_code"] is not None else "")
        )
        sys.stdout.write(
            f"{str(r['id'])[:8]}  {r['state']:9}  {r['dataset'] + ' v' + str(r['version']):14}"
            f"  {r['launcher']:8}  {detail}\n"
        )
    return 0


async def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    return await run_roles(settings, {"gateway"})


async def cmd_s3(settings: Settings, args: argparse.Namespace) -> int:
    return await run_roles(settings, {"s3"})


async def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.device:
        from workers.engines.faster_whisper import resolve_device

        try:
            resolve_device(args.device)
        except ConfigError as exc:
            sys.stderr.write(f"ai2text: {exc}\n")
            return EXIT_CONFIG
        overrides["device"] = args.device
    if args.concurrency is not None:
        if args.concurrency < 1:
            sys.stderr.write("ai2text: --concurrency must be at least 1\n")
            return EXIT_CONFIG
        overrides["concurrency"] = args.concurrency
    if overrides:
        settings = settings.model_copy(update={"asr": settings.asr.model_copy(update=overrides)})
    return await run_roles(settings, {"worker"})


async def cmd_watch(settings: Settings, args: argparse.Namespace) -> int:
    return await run_roles(settings, {"watch"})


async def _query(settings: Settings, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """One connection, to the server ``ai2text up`` already runs when it does (no start)."""
    from pipeline.db.database import build_database
    from pipeline.permissions import ensure_data_dir

    ensure_data_dir(settings.data_dir)
    async with build_database(settings).one_shot() as conn:
        return await fn(conn)


async def _with_database(settings: Settings, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """An opened database (a small pool, and a notification hub when ``fn`` needs one)."""
    from pipeline.db.database import build_database
    from pipeline.permissions import ensure_data_dir

    ensure_data_dir(settings.data_dir)
    db = build_database(settings)
    await db.open(pool_max_size=4)
    try:
        return await fn(db)
    finally:
        await db.close()


async def _with_store(settings: Settings, fn: Callable[[Any, Any], Awaitable[Any]]) -> Any:
    from pipeline.storage import open_store

    return await _with_database(
        settings, lambda db: fn(db, open_store(settings.storage, settings.data_dir))
    )


async def cmd_ls(settings: Settings, args: argparse.Namespace) -> int:
    from ai2text import views
    from pipeline import catalog

    wanted = catalog.AudioFilter(
        state=filters.merge_states(args.state),
        since=args.since,
        until=args.until,
        review=True if args.review else None,
    )
    rows = await _query(
        settings,
        lambda c: catalog.list_audio(c, tenant=None, filters=wanted, after=None, limit=args.limit),
    )
    if args.json:
        _print_json(rows)
        return 0
    views.write_audio_list(rows, sys.stdout)
    return 0


async def cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    """Like ``GET /v1/search``, over every tenant."""
    from ai2text import views
    from pipeline import catalog

    query = args.query.strip()
    if not query or len(query) > MAX_QUERY:
        sys.stderr.write(f"ai2text: the search query must be 1 to {MAX_QUERY} characters\n")
        return EXIT_CONFIG
    if args.limit < 1:
        sys.stderr.write("ai2text: --limit must be at least 1\n")
        return EXIT_CONFIG
    rows = await _query(
        settings, lambda c: catalog.search(c, tenant=None, query=query, limit=args.limit)
    )
    if args.json:
        _print_json(rows)
        return 0
    views.write_search_results(rows, sys.stdout, emphasis=sys.stdout.isatty())
    if not rows:
        sys.stderr.write(f"no transcript says {query!r}\n")
    return 0


MAX_QUERY = 500  # as GET /v1/search


async def cmd_retry(settings: Settings, args: argparse.Namespace) -> int:
    """Put a dead or failed job back, as ``POST /v1/jobs/{id}/retry`` (the same function)."""
    from pipeline import catalog

    async def retry(conn: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
        job = await catalog.resolve_job(conn, args.job)
        return job, await catalog.retry_job(conn, job["id"])

    job, retried = await _query(settings, retry)
    if retried is None:
        sys.stderr.write(
            f"ai2text: job {job['id']} ({job['original_name']}, audio {job['audio_id']}) is"
            f" {job['state']}; only dead or failed jobs can be retried\n"
        )
        return EXIT_FAILED
    if args.json:
        _print_json(retried)
        return 0
    sys.stdout.write(
        f"job {job['id']} queued again ({job['original_name']}, audio {job['audio_id']});"
        f" it was {job['state']}" + (f": {job['last_error']}" if job["last_error"] else "") + "\n"
    )
    return 0


async def cmd_correct(settings: Settings, args: argparse.Namespace) -> int:
    """A corrected transcript from a file, as ``PUT /v1/audio/{id}/transcript`` (the same
    function); exit 1 when it is refused (the reason on stderr)."""
    from ai2text import correct_cli
    from pipeline.corrections import CorrectionRefused, RevisionConflict, TranscriptMissing

    try:
        applied = await correct_cli.correct(settings, args, _query)
    except (CorrectionRefused, RevisionConflict) as exc:
        sys.stderr.write(f"ai2text: correction refused: {exc}\n")
        return EXIT_FAILED
    except TranscriptMissing as exc:
        sys.stderr.write(f"ai2text: {exc}\n")
        return EXIT_FAILED
    if args.json:
        _print_json(applied.transcript)
    else:
        correct_cli.write_applied(applied, sys.stdout)
    return 0


async def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    from ai2text import views
    from pipeline import catalog
    from pipeline.formats import FORMATS, cues_of

    async def fetch(conn: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
        audio_id = await catalog.resolve_audio_id(conn, args.id)
        audio = await catalog.get_audio(conn, tenant=None, audio_id=audio_id)
        assert audio is not None
        return audio, await catalog.get_transcript(conn, tenant=None, audio_id=audio_id)

    if args.follow:
        return await _show_following(settings, args.id)
    audio, transcript = await _query(settings, fetch)
    fmt = "json" if args.json else args.format
    if fmt == "json":
        _print_json({"audio": audio, "transcript": transcript})
        return 0
    if audio.get("superseded_by"):
        sys.stderr.write(
            f"note: superseded by {audio['superseded_by']}, a later version of the same file;"
            " this one was taken before it was complete\n"
        )
    if transcript is None:
        _describe_missing(audio, sys.stderr)
        progress = views.progress_line(audio)
        if progress is not None:
            sys.stderr.write(progress + "\n")
        return 1
    cues = cues_of(transcript["segments"])
    if fmt == "timestamps":
        sys.stdout.write(views.transcript_heading(audio, transcript))
    else:  # the output is the format alone; a person still hears when it is unsure
        if not transcript["segments"]:
            sys.stderr.write(f"note: {views.empty_note(transcript)}\n")
        note = views.review_note(transcript)
        if note:
            sys.stderr.write(note)
    sys.stdout.write(FORMATS[fmt].render(cues, settings.subtitles))
    return 0


async def _show_following(settings: Settings, ref: str) -> int:
    from ai2text import views
    from ai2text.follow import follow
    from pipeline.formats import FORMATS, cues_of

    def render(audio: dict[str, Any], transcript: dict[str, Any]) -> str:
        cues = cues_of(transcript["segments"])
        body = FORMATS["timestamps"].render(cues, settings.subtitles)
        return views.transcript_heading(audio, transcript) + body

    return int(await _with_database(settings, lambda db: follow(db, ref, sys.stdout, render)))


async def cmd_console_link(settings: Settings, args: argparse.Namespace) -> int:
    from ai2text import console_cli

    return await console_cli.cmd_console_link(settings, args)


async def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.keys import mint_token, resolve_key_files
    from pipeline.permissions import ensure_data_dir

    ensure_data_dir(settings.data_dir)  # the dev keys live there, 0700 like the rest
    private, _public = resolve_key_files(settings.auth, settings.data_dir)
    scopes = args.scopes or ["audio:read", "audio:write", "transcripts:read"]
    token = mint_token(
        settings.auth,
        settings.data_dir,
        subject=args.subject,
        scopes=scopes,
        tenant=args.tenant,
        ttl_s=args.ttl,
    )
    sys.stderr.write(f"signed with {private}; valid {args.ttl:.0f} s; scopes {' '.join(scopes)}\n")
    sys.stdout.write(token + "\n")
    return 0


def _describe_missing(audio: dict[str, Any], out: TextIO) -> None:
    state = audio["state"]
    detail = f": {audio['error']}" if audio.get("error") else ""
    out.write(
        f"no transcript for {audio['original_name']} ({audio['id']}); state {state}{detail}\n"
    )


async def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline import catalog

    async def fetch(conn: Any) -> dict[str, Any]:
        status = await catalog.stats(conn, tenant=None)
        status["s3_events"] = await catalog.s3_event_counts(conn)
        status["workers"] = await catalog.list_workers(conn, stale_after_s=settings.queue.lease_s)
        return status

    status = await _query(settings, fetch)
    if args.json:
        _print_json(status)
        return 0
    out = sys.stdout
    out.write("audio:   " + _counts(status["audio_by_state"]) + "\n")
    out.write("jobs:    " + _counts(status["jobs_by_state"]) + "\n")
    out.write(f"queue depth: {status['queue_depth']}\n")
    if status["s3_events"]:
        out.write("s3 events: " + _counts(status["s3_events"]) + "\n")
    out.write(
        f"hours transcribed: {status['hours_transcribed']:.3f}"
        f" ({status['transcripts']} transcripts)\n"
    )
    rtf = status["average_real_time_factor"]
    out.write(f"average real-time factor: {rtf:.3f}\n" if rtf is not None else "")
    alive = [w for w in status["workers"] if w["alive"]]
    out.write(f"workers: {len(alive)} alive\n")
    for line in _describe_processes(alive):
        out.write(f"  {line}\n")
    for w in alive:
        out.write(f"  {_describe_worker(w)}\n")
        if w.get("model_problem"):
            out.write(f"    not on the promoted model: {w['model_problem']}\n")
    return 0


def _describe_processes(alive: list[dict[str, Any]]) -> list[str]:
    """One line per worker process: how many jobs it runs at once (asr.concurrency)."""
    processes: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for w in alive:
        processes.setdefault((w["hostname"], w["pid"]), []).append(w)
    return [
        f"process {host} pid {pid}: {len(ws)} jobs at once, model {ws[0]['model']}"
        f" on {ws[0]['device']}"
        for (host, pid), ws in processes.items()
    ]


def _describe_worker(w: dict[str, Any]) -> str:
    doing = f"job {w['current_job_id']}" if w["current_job_id"] else "idle"
    text = (
        f"{w['worker_id']}  model {w['model']}  {w['device']} {w['compute_type']}"
        f" batch {w['batch_size']}"
        f"  {doing}  done {w['jobs_done']}, failed {w['jobs_failed']}"
    )
    if w["gpu_memory_total_bytes"]:
        used, total = w["gpu_memory_used_bytes"] / 2**30, w["gpu_memory_total_bytes"] / 2**30
        text += f"  GPU memory {used:.1f}/{total:.1f} GiB"
    return text


def _counts(by_state: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in by_state.items()) or "none"


async def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 1 when the configured model cannot be used (a readiness check for scripts).

    ``list``, ``promote`` and ``rollback`` work on the registry of trained models.
    """
    import asyncio

    from ai2text import models_cli
    from pipeline.models import list_models

    if models_cli.is_action(args):
        return await cmd_model_registry(settings, args)
    entries = await asyncio.to_thread(list_models, settings.asr.model, settings.asr.model_cache_dir)
    usable = all(e.available for e in entries if e.default)
    if args.json:
        _print_json([e.as_dict() for e in entries])
        return 0 if usable else EXIT_FAILED
    out = sys.stdout
    out.write(f"{'NAME':24}  {'DEFAULT':7}  {'LANGUAGES':20}  {'SIZE':>8}  SOURCE\n")
    for e in entries:
        few = len(e.languages) <= 3
        languages = ", ".join(e.languages) if few else f"{len(e.languages)} languages"
        size = f"{e.size_bytes / 2**20:.0f} MiB" if e.size_bytes is not None else "-"
        out.write(
            f"{e.name:24}  {'yes' if e.default else '':7}  {languages or '-':20}  {size:>8}"
            f"  {e.source}\n"
        )
        if e.problem:
            out.write(f"{'':24}  unavailable: {e.problem}\n")
    if models_cli.has_database(settings):
        from pipeline.registry import records

        out.write("\ntrained models (ai2text models list, promote, rollback):\n")
        try:
            models_cli.write_registry(await _query(settings, records.list_models), out)
        except Ai2TextError as exc:
            out.write(f"registry unavailable: {exc}\n")
    return 0 if usable else EXIT_FAILED


async def cmd_model_registry(settings: Settings, args: argparse.Namespace) -> int:
    """``models list``, ``models promote ID [--force]``, ``models rollback``."""
    from ai2text import models_cli
    from pipeline.errors import Conflict
    from pipeline.registry import candidates, records

    out = sys.stdout
    if args.models_command == "list":
        rows = await _query(settings, records.list_models)
        if args.json:
            _print_json([m.as_dict() for m in rows])
        else:
            models_cli.write_registry(rows, out)
        return 0
    who = models_cli.actor()
    if args.models_command == "register":
        registered = await _with_store(
            settings,
            lambda db, store: _register_run(settings, db, store, args.run_dir, who),
        )
        if args.json:
            _print_json(registered.as_dict())
        else:
            sys.stdout.write(
                f"registered {registered.name} ({registered.id}) as a candidate;"
                f" ai2text models promote {registered.name} runs the gate\n"
            )
        return 0
    try:
        if args.models_command == "promote":
            rules = candidates.rules_of(settings.training)
            model, decision = await _with_database(
                settings,
                lambda db: candidates.judge(db, args.model, rules, actor=who, force=args.force),
            )
            if args.json:
                _print_json({"promoted": decision.promote, "model": model.as_dict()})
            elif decision.promote:
                models_cli.write_promoted(model, decision.reason, out)
            if not decision.promote:
                sys.stderr.write(
                    f"ai2text: {model.name}: {decision.reason} (--force promotes it anyway)\n"
                )
                return EXIT_FAILED
            return 0
        retired, restored = await _query(settings, lambda c: records.rollback(c, actor=who))
    except (Conflict, records.ModelNotFound) as exc:
        sys.stderr.write(f"ai2text: {exc}\n")
        return EXIT_FAILED
    if args.json:
        _print_json(
            {"retired": retired.as_dict(), "promoted": restored.as_dict() if restored else None}
        )
    else:
        models_cli.write_rollback(retired, restored, out)
    return 0


async def _register_run(settings: Settings, db: Any, store: Any, run_dir: Path, who: str) -> Any:
    """``models register``: the run's model as a candidate trained from the current one."""
    from pipeline.registry import candidates

    base = await candidates.current_base_named(db, settings.asr)
    model = await candidates.register_run(db, store, run_dir, base=base, created_by=who)
    if model is None:
        raise candidates.CandidateRejected(f"{run_dir} holds no model/ directory")
    return model


async def cmd_webhooks(settings: Settings, args: argparse.Namespace) -> int:
    """As ``/v1/webhooks`` and its deliveries, over every tenant; ``retry EVENT``."""
    from ai2text import webhooks_cli

    if args.webhooks_command == "set":
        from pipeline.deliveries.addresses import private_addresses_allowed

        allow = private_addresses_allowed(settings)
        try:
            changed = await _query(
                settings, lambda c: webhooks_cli.change(c, args, allow_private=allow)
            )
        except webhooks_cli.ChangeRefused as exc:
            sys.stderr.write(f"ai2text: {exc}\n")
            return EXIT_FAILED
        if args.json:
            _print_json(changed)
        else:
            webhooks_cli.write_changed(changed, sys.stdout)
        return 0
    if args.webhooks_command == "retry":
        retried = await _query(settings, lambda c: webhooks_cli.retry(c, args))
        if not retried:
            sys.stderr.write(f"ai2text: event {args.event} has no dead delivery to retry\n")
            return EXIT_FAILED
        if args.json:
            _print_json(retried)
        else:
            webhooks_cli.write_retried(args.event, retried, sys.stdout)
        return 0
    result = await _query(settings, lambda c: webhooks_cli.overview(c, args.limit))
    if args.json:
        _print_json(result)
    else:
        webhooks_cli.write_overview(result, sys.stdout)
    return 0


def _print_json(value: Any) -> None:
    """As the API writes it: times in ISO 8601 (``2026-12-02T16:13:39.123456Z``), ids as text."""
    from pydantic_core import to_jsonable_python

    json.dump(to_jsonable_python(value, fallback=str), sys.stdout, indent=2)
    sys.stdout.write("\n")


QUERY_COMMANDS = frozenset(
    {"ls", "show", "search", "retry", "status", "token", "dataset", "runs", "models", "webhooks"}
    | {"correct"}
)

COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "up": cmd_up,
    "worker": cmd_worker,
    "watch": cmd_watch,
    "gateway": cmd_gateway,
    "s3": cmd_s3,
    "ls": cmd_ls,
    "show": cmd_show,
    "search": cmd_search,
    "retry": cmd_retry,
    "correct": cmd_correct,
    "status": cmd_status,
    "token": cmd_token,
    "orchestrator": cmd_orchestrator,
    "dataset": cmd_dataset,
    "runs": cmd_runs,
    "models": cmd_models,
    "webhooks": cmd_webhooks,
    "console-link": cmd_console_link,
}
