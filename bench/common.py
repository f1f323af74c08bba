"""Shared pieces of the issue-6 benchmarks: machine facts, a PostgreSQL for the run,
foreign-load guarded measurements, process CPU and memory readings, result files.

Everything here reads Linux ``/proc``; the benchmarks are Linux-only.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.sysload import CpuWindow, postgres_pids  # noqa: E402

RESULTS = REPO / "bench" / "results"
FOREIGN_LOAD_LIMIT = 0.3  # cores of foreign CPU during a measurement that we call "disturbed"
_TICK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    """Progress on stderr (results go to stdout and files)."""
    sys.stderr.write(f"[bench {datetime.now():%H:%M:%S}] {msg}\n")
    sys.stderr.flush()


def stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def utc_now_text() -> str:
    return datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


# -- the machine ---------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = "unknown"
    mhz = None
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("cpu MHz") and mhz is None:
                mhz = float(line.split(":", 1)[1])
    mem_kb = 0
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "cpu_mhz": mhz,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        # Others edit the tree while benchmarks run: name what differed from the commit.
        "uncommitted_production_files": git(
            "status", "--porcelain", "--", "pipeline", "workers", "gateway"
        ).splitlines(),
        "loadavg_at_start": os.getloadavg(),
        "started": utc_now_text(),
    }


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=False)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``AI2TEXT_*`` variable, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AI2TEXT_")}
    return {**base, "PYTHONUNBUFFERED": "1", **extra}


# -- processes: CPU time and memory --------------------------------------------------


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            rest = f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(rest[11]) + int(rest[12])) / _TICK


def cpu_s_of(pids: Iterable[int]) -> float:
    return sum(t for t in (proc_cpu_s(p) for p in set(pids)) if t is not None)


def status_kib(pid: int, field_name: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM, ...), or None."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def thread_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


# -- measurements guarded against foreign load ---------------------------------------


def wait_for_quiet(own: Callable[[], list[int]], limit: float, max_wait_s: float) -> float:
    """Wait (at most ``max_wait_s``) for a 1-s window with foreign load under ``limit``."""
    started = time.monotonic()
    while True:
        window = CpuWindow(own).start()
        time.sleep(1.0)
        if window.stop()["foreign_cores"] < limit or time.monotonic() - started > max_wait_s:
            return round(time.monotonic() - started, 1)


@dataclass
class Guard:
    """Re-measure what foreign CPU load disturbed, up to ``retries`` more times."""

    limit: float = FOREIGN_LOAD_LIMIT
    retries: int = 3
    max_quiet_wait_s: float = 60.0
    discarded: list[dict[str, Any]] = field(default_factory=list)

    def run(
        self, what: str, measure: Callable[[int], dict[str, Any]], own: Callable[[], list[int]]
    ) -> dict[str, Any]:
        """``measure(attempt)`` must return a dict with ``foreign_cores``; keep the first
        undisturbed one, or the least disturbed after all retries (flagged)."""
        tried: list[dict[str, Any]] = []
        for attempt in range(self.retries + 1):
            waited = wait_for_quiet(own, self.limit, self.max_quiet_wait_s)
            result = measure(attempt)
            result["attempt"] = attempt
            result["waited_for_quiet_s"] = waited
            result["disturbed"] = result["foreign_cores"] > self.limit
            tried.append(result)
            if not result["disturbed"]:
                break
            log(
                f"{what}: foreign load {result['foreign_cores']:.2f} cores > {self.limit};"
                f" {'measuring again' if attempt < self.retries else 'giving up, keeping best'}"
            )
        best = min(tried, key=lambda r: r["foreign_cores"]) if tried[-1]["disturbed"] else tried[-1]
        for r in tried:
            if r is not best:
                self.discarded.append({"what": what, **r})
        return best


# -- a PostgreSQL for the run ---------------------------------------------------------


class PgServer:
    """One pgserver PostgreSQL in a fresh world-traversable temp dir, a database per use.

    As root, pgserver runs the server as another user, who must be able to reach the
    data directory: hence a 0755 directory under /tmp, never a 0700 one.
    """

    def __init__(self, prefix: str = "ai2text-bench-pg-") -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.root.chmod(0o755)
        self.pgdata = self.root / "pgdata"
        self._server: Any = None

    def start(self) -> PgServer:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        return self

    def uri(self, database: str | None = None) -> str:
        uri: str = self._server.get_uri(database=database)
        return uri

    def create_database(self, prefix: str) -> str:
        """A new empty database; returns its URI."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def drop_database(self, uri: str) -> None:
        import psycopg

        name = uri.rsplit("/", 1)[1].split("?", 1)[0]
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def pids(self) -> list[int]:
        return postgres_pids(self.pgdata)

    def stop(self) -> dict[str, Any]:
        """Stop the server, confirm no PostgreSQL of its data dir is left, delete it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        deadline = time.monotonic() + 15
        left = self.pids()
        while left and time.monotonic() < deadline:
            time.sleep(0.25)
            left = self.pids()
        result: dict[str, Any] = {"postgres_left_after_stop": left}
        if left:
            master = min(left)
            log(f"PostgreSQL of {self.pgdata} still running ({left}); SIGTERM to {master}")
            os.kill(master, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.25)
        result["postgres_left_at_end"] = self.pids()
        if not result["postgres_left_at_end"]:
            shutil.rmtree(self.root, ignore_errors=True)
        return result


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 60) -> int | str:
    """SIGTERM, wait; kill after ``timeout``. The exit code (or what happened)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        return "timeout: killed"


# -- logs of ai2text processes ---------------------------------------------------------


def read_events(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of an ``ai2text`` log (``AI2TEXT_LOG_FORMAT=json``)."""
    events = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def event_epoch(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


# -- numbers and results ----------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_results(
    name: str, run_stamp: str, report: dict[str, Any], markdown: str, out: Path = RESULTS
) -> tuple[Path, Path]:
    """``<out>/<name>-<stamp>.{json,md}`` and ``<name>-latest.{json,md}``."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{name}-{run_stamp}.json"
    md_path = out / f"{name}-{run_stamp}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    md_path.write_text(markdown, encoding="utf-8")
    shutil.copy(json_path, out / f"{name}-latest.json")
    shutil.copy(md_path, out / f"{name}-latest.md")
    return json_path, md_path


def install_sigterm_exit() -> None:
    """A SIGTERM (e.g. from ``timeout``) unwinds like Ctrl-C, so ``finally`` blocks run."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def run_and_report(
    name: str,
    args: Any,
    run: Callable[[Any], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
) -> int:
    """Run one benchmark, write ``<name>-<stamp>.{json,md}``, print the markdown."""
    install_sigterm_exit()
    run_stamp = stamp()
    report = run(args)
    text = markdown(report)
    json_path, md_path = write_results(name, run_stamp, report, text, args.out)
    sys.stdout.write(text)
    sys.stdout.write(f"\nwritten: {md_path}, {json_path}\n")
    return 0


# -- one running `ai2text up` -------------------------------------------------------------


class UpProcess:
    """One ``ai2text up`` (JSON logs to ``root/up.log``) and the way to wait on its events."""

    def __init__(self, env: dict[str, str], root: Path) -> None:
        self.env = env
        self.log_path = root / "up.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "ai2text", "up"], env=env, stdout=out, stderr=out, cwd=root
            )

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in read_events(self.log_path) if e.get("event") == name]

    def wait(self, what: str, found: Callable[[], Any], timeout: float, poll: float = 0.2) -> Any:
        """``found()`` once it is truthy; fails when ``up`` exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = found()
            if value:
                return value
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"ai2text up exited ({self.proc.returncode}); see {self.log_path}"
                )
            time.sleep(poll)
        raise TimeoutError(f"{what}: not within {timeout:g} s; see {self.log_path}")

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        """The first ``name`` event of the log, once there is one."""
        return self.wait(f"event {name!r}", lambda: next(iter(self.events(name)), None), timeout)

    def stop(self) -> int | str:
        return stop_process(self.proc)


def training_up_env(
    root: Path, inbox: Path, *, model: str, threshold_hours: float, command: list[str], **extra: str
) -> dict[str, str]:
    """``up``'s environment with training on and auto-promotion: data under ``root``."""
    return clean_env(
        AI2TEXT_DATA_DIR=str(root / "data"),
        AI2TEXT_WATCH__INBOX=str(inbox),
        AI2TEXT_WATCH__QUIET_PERIOD_S="0.5",
        AI2TEXT_WATCH__MIN_FREE_BYTES="0",
        AI2TEXT_LOG_FORMAT="json",
        AI2TEXT_ASR__MODEL=model,
        AI2TEXT_ASR__MODEL_CACHE_DIR=str(root / "cache"),
        AI2TEXT_ASR__DEVICE="cpu",
        AI2TEXT_TRAINING__ENABLED="true",
        AI2TEXT_TRAINING__THRESHOLD_HOURS=repr(threshold_hours),
        AI2TEXT_TRAINING__MIN_FREE_BYTES="0",
        AI2TEXT_TRAINING__AUTO_PROMOTE="true",
        AI2TEXT_TRAINING__COMMAND=json.dumps(command),
        **extra,
    )


def steps_after(
    log_path: Path, start: dict[str, Any], steps: Iterable[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Seconds from the ``start`` event to the first of each (event, label) in ``steps``."""
    firsts: dict[str, dict[str, Any]] = {}
    for event in read_events(log_path):
        firsts.setdefault(str(event.get("event")), event)
    origin = event_epoch(start)
    return [
        {
            "step": label,
            "event": name,
            "after_crossing_s": round(event_epoch(firsts[name]) - origin, 2),
        }
        for name, label in steps
        if name in firsts
    ]
