#!/usr/bin/env python
"""Inbox flood: 10,000 small WAV files dropped at once into the inbox of ``ai2text watch``.

Run from the repository root:

    .venv/bin/python bench/inbox_flood.py            # 10,000 files
    .venv/bin/python bench/inbox_flood.py --quick    # 300 files

Two variants, each against a fresh database on one PostgreSQL (pgserver) started here and
a fresh data directory (filesystem object store); no worker runs, jobs just queue:

- flood: the watcher is running and idle; the files, written beforehand to a staging
  directory on the same filesystem, are renamed into the inbox as fast as possible;
- startup scan: the files are already in the inbox when the watcher starts.

Measured: time from the first drop (or the process start) until the database holds an
audio row for every file, files/s, per-file drop-to-row latency, the watcher's idle and
peak RSS (VmRSS sampled at 20 Hz, VmHWM at the end), and that no file was lost,
duplicated or rejected. Results: bench/results/inbox-flood-<stamp>.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    FOREIGN_LOAD_LIMIT,
    Guard,
    PgServer,
    clean_env,
    cpu_s_of,
    event_epoch,
    log,
    machine_info,
    median,
    percentile,
    read_events,
    run_and_report,
    status_kib,
    stop_process,
    wait_for_quiet,
)
from bench.sysload import CpuWindow  # noqa: E402
from tests.wav import write_wav  # noqa: E402

SAMPLE_RATE = 16000
DEFAULT_QUIET_PERIOD_S = 2.0  # WatchSettings.quiet_period_s, left at its default
NO_PROGRESS_TIMEOUT_S = 180.0  # longer than the watcher's 60-s rescan


def write_wavs(dest: Path, n: int) -> list[str]:
    """``n`` byte-distinct 16 kHz mono WAVs of 0.50-1.00 s (a tone; the index in the
    first samples makes every file's bytes unique). Returns the names."""
    import numpy as np

    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        frames = int(SAMPLE_RATE * (0.5 + (i % 51) / 100))
        t = np.arange(frames) / SAMPLE_RATE
        pcm = (0.2 * np.sin(2 * np.pi * (220 + i % 500) * t) * 32767).astype("<i2")
        pcm[0], pcm[1] = i & 0x7FFF, i >> 15
        name = f"flood-{i:05d}.wav"
        write_wav(dest / name, pcm.tobytes(), rate=SAMPLE_RATE)
        names.append(name)
    return names


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the watcher's examining children), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class RssSampler(threading.Thread):
    """VmRSS of one process every ``interval_s`` (20 Hz by default); with ``children``,
    also the summed VmRSS of its descendants (sampled 5 times less often)."""

    def __init__(self, pid: int, interval_s: float = 0.05, children: bool = False) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval_s = interval_s
        self.children = children
        self.samples: list[tuple[float, int]] = []
        self.children_samples: list[tuple[float, int, int]] = []  # (t, sum KiB, count)
        self._stop_event = threading.Event()

    def run(self) -> None:
        tick = 0
        while not self._stop_event.is_set():
            kib = status_kib(self.pid, "VmRSS")
            if kib is not None:
                self.samples.append((time.time(), kib))
            if self.children and tick % 5 == 0:
                kids = [status_kib(c, "VmRSS") for c in descendants(self.pid)]
                sizes = [k for k in kids if k is not None]
                self.children_samples.append((time.time(), sum(sizes), len(sizes)))
            tick += 1
            self._stop_event.wait(self.interval_s)

    def finish(self) -> list[tuple[float, int]]:
        self._stop_event.set()
        self.join(timeout=5)
        return self.samples


class Flood:
    """One measurement of one variant: fresh database, data dir and inbox."""

    def __init__(
        self,
        pg: PgServer,
        work: Path,
        n: int,
        variant: str,
        guard: Guard,
        *,
        workers: int = 0,
        model: str = "tiny.en",
    ) -> None:
        self.watch_env: dict[str, str] = {}  # extra AI2TEXT_WATCH__* settings
        self.n_workers = workers
        self.model = model
        self.workers: list[subprocess.Popen[bytes]] = []
        self.pg = pg
        self.work = work
        self.n = n
        self.variant = variant
        self.guard = guard
        self.proc: subprocess.Popen[bytes] | None = None
        self.profile: Path | None = None  # cProfile output of the watcher's main thread

    def own_pids(self) -> list[int]:
        watcher = [self.proc.pid, *descendants(self.proc.pid)] if self.proc else []
        workers = [p for w in self.workers for p in (w.pid, *descendants(w.pid))]
        return [os.getpid(), *watcher, *workers, *self.pg.pids()]

    def examiner_pids(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc else []

    def measure(self, attempt: int) -> dict[str, Any]:
        import psycopg

        from pipeline.db.migrate import migrate

        root = Path(tempfile.mkdtemp(prefix=f"{self.variant}{attempt}-", dir=self.work))
        inbox, staging = root / "inbox", root / "staging"
        url = self.pg.create_database(f"flood_{self.variant}")
        with psycopg.connect(url) as conn:
            migrate(conn)  # as a deployed database would be; the watcher finds it current
        log(f"{self.variant}: writing {self.n} files")
        names = write_wavs(inbox if self.variant == "startup" else staging, self.n)
        env = clean_env(
            AI2TEXT_DATABASE__URL=url,
            AI2TEXT_DATA_DIR=str(root / "data"),
            AI2TEXT_WATCH__INBOX=str(inbox),
            AI2TEXT_LOG_FORMAT="json",
            AI2TEXT_ASR__CONCURRENCY="0",
            AI2TEXT_GATEWAY__ENABLED="false",
            **self.watch_env,
        )
        log_path = root / "watch.log"
        m: dict[str, Any] = {"variant": self.variant, "files": self.n, "root": str(root)}
        m["workers"] = self.n_workers
        if self.n_workers:
            m["workers_ready_s"] = self._start_workers(env, root)
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                if self.variant == "startup":
                    m.update(self._startup(env, log_path, conn))
                else:
                    m.update(self._flood(env, log_path, conn, staging, inbox, names))
                m.update(self._check(conn, names, inbox))
        finally:
            if self.proc is not None:
                m["exit_code"] = stop_process(self.proc)
                self.proc = None
            m["worker_exit_codes"] = [stop_process(w) for w in self.workers]
            self.workers = []
        m.update(self._log_summary(log_path))
        self.pg.drop_database(url)
        shutil.rmtree(root, ignore_errors=True)
        return m

    def _start_workers(self, env: dict[str, str], root: Path) -> float:
        """``ai2text worker`` processes on the same database, one job each; wait until
        every one has loaded its model. They transcribe the flood's files as they queue."""
        t0 = time.monotonic()
        logs = []
        for i in range(self.n_workers):
            log_path = root / f"worker{i}.log"
            logs.append(log_path)
            worker_env = env | {
                "AI2TEXT_ASR__CONCURRENCY": "1",
                "AI2TEXT_ASR__MODEL": self.model,
                "AI2TEXT_ASR__DEVICE": "cpu",
                "AI2TEXT_ASR__COMPUTE_TYPE": "int8",
            }
            with open(log_path, "ab") as out:
                self.workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "ai2text", "worker"],
                        env=worker_env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=REPO,
                    )
                )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            ready = sum(any(e.get("event") == "worker ready" for e in read_events(p)) for p in logs)
            if ready == len(logs):
                return round(time.monotonic() - t0, 1)
            for w, p in zip(self.workers, logs, strict=True):
                if w.poll() is not None:
                    raise RuntimeError(f"worker exited: {p.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        raise TimeoutError("workers did not get ready")

    def _spawn(self, env: dict[str, str], log_path: Path) -> float:
        with open(log_path, "ab") as out:
            t0 = time.time()
            profile = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
            self.proc = subprocess.Popen(
                [sys.executable, *profile, "-m", "ai2text", "watch"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        return t0

    def _watching_epoch(self, log_path: Path, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in read_events(log_path):
                if e.get("event") == "watching":
                    return event_epoch(e)
            self._check_alive(log_path)
            time.sleep(0.05)
        raise TimeoutError("the watcher did not log 'watching'")

    def _check_alive(self, log_path: Path) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"ai2text watch exited with {self.proc.returncode}:\n{tail}")

    def _flood(
        self,
        env: dict[str, str],
        log_path: Path,
        conn: Any,
        staging: Path,
        inbox: Path,
        names: list[str],
    ) -> dict[str, Any]:
        t_spawn = self._spawn(env, log_path)
        watching = self._watching_epoch(log_path)
        assert self.proc is not None
        time.sleep(3.0)  # let start-up settle before reading the idle RSS
        idle = RssSampler(self.proc.pid)
        idle.start()
        time.sleep(2.0)
        idle_kib = median([kib for _, kib in idle.finish()])
        waited = wait_for_quiet(self.own_pids, self.guard.limit, self.guard.max_quiet_wait_s)
        sampler = RssSampler(self.proc.pid, children=True)
        sampler.start()
        window = CpuWindow(self.own_pids).start()
        watcher_cpu0 = cpu_s_of([self.proc.pid])
        examiners_cpu0 = cpu_s_of(self.examiner_pids())
        workers_cpu0 = cpu_s_of(p for w in self.workers for p in (w.pid, *descendants(w.pid)))
        drops: dict[str, float] = {}
        t_first = time.time()
        for name in names:
            os.rename(staging / name, inbox / name)
            drops[name] = time.time()
        t_last = time.time()
        done = self._wait_all(conn, log_path)
        cpu = window.stop()
        watcher_cpu = cpu_s_of([self.proc.pid]) - watcher_cpu0
        examiners_cpu = cpu_s_of(self.examiner_pids()) - examiners_cpu0
        workers_cpu = (
            cpu_s_of(p for w in self.workers for p in (w.pid, *descendants(w.pid))) - workers_cpu0
        )
        samples = sampler.finish()
        hwm = status_kib(self.proc.pid, "VmHWM")
        return {
            **_children_summary(sampler),
            "examiners_cpu_s": round(examiners_cpu, 2),
            "workers_cpu_s": round(workers_cpu, 2),
            "startup_s": round(watching - t_spawn, 3),
            "t_start": t_first,
            "drop_s": round(t_last - t_first, 3),
            "drops": drops,
            "complete": done,
            "idle_rss_kib": idle_kib,
            "peak_rss_kib": max(kib for _, kib in samples),
            "rss_samples": len(samples),
            "vm_hwm_kib": hwm,
            "cpu": cpu,
            "watcher_cpu_s": round(watcher_cpu, 2),
            "foreign_cores": cpu["foreign_cores"],
            "waited_before_drop_s": waited,
        }

    def _startup(self, env: dict[str, str], log_path: Path, conn: Any) -> dict[str, Any]:
        waited = wait_for_quiet(self.own_pids, self.guard.limit, self.guard.max_quiet_wait_s)
        window = CpuWindow(self.own_pids).start()
        t_spawn = self._spawn(env, log_path)
        assert self.proc is not None
        sampler = RssSampler(self.proc.pid, children=True)
        sampler.start()
        done = self._wait_all(conn, log_path)
        cpu = window.stop()
        watcher_cpu = cpu_s_of([self.proc.pid])
        samples = sampler.finish()
        hwm = status_kib(self.proc.pid, "VmHWM")
        watching = self._watching_epoch(log_path)
        return {
            **_children_summary(sampler),
            "examiners_cpu_s": round(cpu_s_of(self.examiner_pids()), 2),
            "startup_s": round(watching - t_spawn, 3),
            "t_start": t_spawn,
            "t_watching": watching,
            "complete": done,
            "peak_rss_kib": max(kib for _, kib in samples),
            "rss_samples": len(samples),
            "vm_hwm_kib": hwm,
            "cpu": cpu,
            "watcher_cpu_s": round(watcher_cpu, 2),
            "foreign_cores": cpu["foreign_cores"],
            "waited_before_drop_s": waited,
        }

    def _wait_all(self, conn: Any, log_path: Path) -> bool:
        """Poll until an audio row exists for every file; False if progress stalls."""
        last, last_change = -1, time.monotonic()
        while True:
            row = conn.execute("SELECT count(*) FROM audio").fetchone()
            count = int(row[0])
            if count >= self.n:
                return True
            now = time.monotonic()
            if count != last:
                last, last_change = count, now
            elif now - last_change > NO_PROGRESS_TIMEOUT_S:
                log(f"{self.variant}: stuck at {count} of {self.n} rows")
                return False
            self._check_alive(log_path)
            time.sleep(0.2)

    def _check(self, conn: Any, names: list[str], inbox: Path) -> dict[str, Any]:
        rows = conn.execute(
            "SELECT original_name, state, extract(epoch FROM created_at) FROM audio"
        ).fetchall()
        jobs = conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        by_name: dict[str, list[float]] = {}
        states: dict[str, int] = {}
        for name, state, created in rows:
            by_name.setdefault(name, []).append(float(created))
            states[state] = states.get(state, 0) + 1
        expected = set(names)
        # Round trips the flood cost PostgreSQL (every process on this database).
        conn.execute("SELECT pg_stat_force_next_flush()")
        xacts = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()[0]
        scans = dict(
            conn.execute(
                "SELECT relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0)"
                " FROM pg_stat_user_tables WHERE relname IN ('deliveries', 'audio', 'jobs')"
            ).fetchall()
        )
        pending = conn.execute(
            "SELECT target, state, count(*) FROM deliveries GROUP BY 1, 2"
        ).fetchall()
        processed = inbox / "processed"
        rejected = inbox / "rejected"
        return {
            "db_transactions": int(xacts),
            "db_table_scans": scans,
            "deliveries": [list(r) for r in pending],
            "rows": len(rows),
            "states": states,
            "jobs": {s: c for s, c in jobs},
            "distinct_names": len(by_name),
            "missing": sorted(expected - set(by_name))[:20],
            "missing_count": len(expected - set(by_name)),
            "unexpected": sorted(set(by_name) - expected)[:20],
            "duplicated_names": sorted(k for k, v in by_name.items() if len(v) > 1)[:20],
            "duplicated_count": sum(1 for v in by_name.values() if len(v) > 1),
            "rejected": states.get("rejected", 0),
            "first_row_epoch": min(min(v) for v in by_name.values()) if by_name else None,
            "last_row_epoch": max(max(v) for v in by_name.values()) if by_name else None,
            "created": {k: v[0] for k, v in by_name.items()},
            "in_processed_dir": len(os.listdir(processed)) if processed.is_dir() else 0,
            "in_rejected_dir": len(os.listdir(rejected)) if rejected.is_dir() else 0,
            "left_in_inbox": sum(1 for p in inbox.iterdir() if p.is_file()),
        }

    def _log_summary(self, log_path: Path) -> dict[str, Any]:
        events = read_events(log_path)
        levels: dict[str, int] = {}
        notable: dict[str, int] = {}
        for e in events:
            level = str(e.get("level"))
            levels[level] = levels.get(level, 0) + 1
            if level in ("warning", "error", "critical"):
                key = str(e.get("event"))
                notable[key] = notable.get(key, 0) + 1
        return {
            "log_ingested_events": sum(1 for e in events if e.get("event") == "ingested"),
            # Files recorded in batches are logged once per batch (each file at debug).
            "log_ingested_in_batches": sum(
                int(e.get("files", 0)) for e in events if e.get("event") == "ingested batch"
            ),
            "log_batches": sum(1 for e in events if e.get("event") == "ingested batch"),
            "log_levels": levels,
            "log_warnings_and_errors": notable,
        }


def _children_summary(sampler: RssSampler) -> dict[str, Any]:
    """Peak summed RSS of the watcher's children (the examining processes) and their count."""
    kids = sampler.children_samples
    return {
        "children_peak_rss_kib": max((k for _, k, _ in kids), default=0),
        "children_max_count": max((c for _, _, c in kids), default=0),
    }


def tick_cost(n: int, inbox: Path, repeat: int = 5) -> dict[str, float]:
    """The watcher's per-tick bookkeeping with ``n`` files pending and all past their quiet
    period: ``StabilityTracker.ready()`` + ``next_due()`` (ms, best of ``repeat``), for files
    first seen at one instant (a start-up scan) and at distinct instants (one event each)."""
    from pipeline.ingest.stability import Fingerprint, StabilityTracker

    out = {}
    for label, step in (("one_instant_ms", 0.0), ("distinct_instants_ms", 1e-4)):
        tracker = StabilityTracker(DEFAULT_QUIET_PERIOD_S)
        for i in range(n):
            tracker.observe(
                inbox / f"flood-{i:05d}.wav", Fingerprint(20_000, i, i), 1000 + i * step
            )
        now = 1000 + n * step + 10
        times = timeit.repeat(
            lambda tracker=tracker, now=now: (tracker.ready(now), tracker.next_due()),
            number=1,
            repeat=repeat,
        )
        out[label] = round(1000 * min(times), 2)
    return out


def derive(m: dict[str, Any]) -> None:
    """Times and rates; per-file latency for the flood variant."""
    created: dict[str, float] = m.pop("created")
    drops: dict[str, float] | None = m.pop("drops", None)
    start = m["t_start"]
    last = m["last_row_epoch"]
    m["total_s"] = round(last - start, 3) if last else None
    m["files_per_s"] = round(m["rows"] / m["total_s"], 1) if m["total_s"] else None
    m["first_row_after_s"] = round(m["first_row_epoch"] - start, 3) if last else None
    span = (last - m["first_row_epoch"]) if last else 0
    m["ingest_phase_s"] = round(span, 3)
    m["ingest_phase_files_per_s"] = round((m["rows"] - 1) / span, 1) if span > 0 else None
    if "t_watching" in m and last:
        m["after_watching_s"] = round(last - m["t_watching"], 3)
    if drops:
        lat = [created[k] - drops[k] for k in drops if k in created]
        m["latency_s"] = {
            "p50": round(percentile(lat, 50), 3),
            "p99": round(percentile(lat, 99), 3),
            "max": round(max(lat), 3),
            "min": round(min(lat), 3),
        }
    m["ok"] = (
        m["complete"]
        and m["missing_count"] == 0
        and m["duplicated_count"] == 0
        and not m["unexpected"]
        and m["rejected"] == 0
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.logs import configure_logging

    configure_logging(fmt="console", level="warning")  # the set-up's migration logs
    work = Path(tempfile.mkdtemp(prefix="ai2text-bench-flood-"))
    work.chmod(0o755)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "args": vars(args) | {"out": None},
        "quiet_period_s": DEFAULT_QUIET_PERIOD_S,
    }
    guard = Guard(retries=args.retries, max_quiet_wait_s=args.max_quiet_wait)
    pg = PgServer().start()
    log(f"PostgreSQL up in {pg.pgdata}")
    measurements = []
    try:
        for variant in args.variants:
            flood = Flood(
                pg, work, args.files, variant, guard, workers=args.workers, model=args.model
            )
            if args.ingest_processes is not None:
                flood.watch_env["AI2TEXT_WATCH__INGEST_PROCESSES"] = str(args.ingest_processes)
            if args.ingest_concurrency is not None:
                flood.watch_env["AI2TEXT_WATCH__INGEST_CONCURRENCY"] = str(args.ingest_concurrency)
            if args.profile_watcher:
                flood.profile = args.profile_watcher.with_suffix(f".{variant}.prof")

            def measure(attempt: int, flood: Flood = flood) -> dict[str, Any]:
                m = flood.measure(attempt)
                derive(m)
                return m

            m = guard.run(variant, measure, flood.own_pids)
            log(
                f"{variant}: {m['rows']} rows in {m['total_s']} s ({m['files_per_s']} files/s),"
                f" peak RSS {m['peak_rss_kib'] / 1024:.0f} MiB, foreign {m['foreign_cores']:.2f}"
            )
            measurements.append(m)
    finally:
        report["shutdown"] = pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    report["measurements"] = measurements
    report["discarded_disturbed"] = guard.discarded
    inbox = work / "startup0-xxxxxxxx" / "inbox"  # a path as long as the measured ones
    report["tick_cost"] = {n: tick_cost(n, inbox) for n in sorted({300, 1000, args.files})}
    return report


def _or_default(value: object) -> str:
    return "default" if value is None else str(value)


def markdown(report: dict[str, Any]) -> str:
    mach = report["machine"]
    lines = [
        f"Inbox flood, {mach['started']}, commit {mach['git_commit']}; {mach['nproc']} cores"
        f" ({mach['cpu_model']}), {mach['mem_gib']} GiB; quiet period"
        f" {report['quiet_period_s']:.0f} s (default); ingest_processes"
        f" {_or_default(report['args'].get('ingest_processes'))}, ingest_concurrency"
        f" {_or_default(report['args'].get('ingest_concurrency'))}, workers"
        f" {report['args'].get('workers', 0)}.",
        "",
        "| variant | files | watcher start→'watching' s | drop loop s | first row after s"
        " | all rows after s | files/s (overall) | files/s (after first row) | drop→row p50 / p99"
        " / max s | idle RSS MiB | peak RSS MiB (20 Hz) | VmHWM MiB | watcher CPU s | rows /"
        " distinct names | missing | duplicated | rejected | foreign cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for m in report["measurements"]:
        lat = m.get("latency_s")
        lat_text = f"{lat['p50']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f}" if lat else "—"
        idle = f"{m['idle_rss_kib'] / 1024:.0f}" if "idle_rss_kib" in m else "—"
        start_label = "process start" if m["variant"] == "startup" else "first drop"
        lines.append(
            f"| {m['variant']} (from {start_label}) | {m['files']} | {m['startup_s']:.1f}"
            f" | {m.get('drop_s', '—')} | {m['first_row_after_s']:.1f} | {m['total_s']:.1f}"
            f" | {m['files_per_s']:.0f} | {m['ingest_phase_files_per_s']:.0f} | {lat_text}"
            f" | {idle} | {m['peak_rss_kib'] / 1024:.0f} | {(m['vm_hwm_kib'] or 0) / 1024:.0f}"
            f" | {m['watcher_cpu_s']:.1f} | {m['rows']} / {m['distinct_names']}"
            f" | {m['missing_count']} | {m['duplicated_count']} | {m['rejected']}"
            f" | {m['foreign_cores']:.2f} |"
        )
    lines += [""]
    for m in report["measurements"]:
        lines.append(
            f"- {m['variant']}: complete={m['complete']}, ok={m['ok']}, audio states {m['states']},"
            f" jobs {m['jobs']}, moved to processed/ {m['in_processed_dir']}, rejected/"
            f" {m['in_rejected_dir']}, left in inbox {m['left_in_inbox']}; watcher log:"
            f" {m['log_ingested_events']} 'ingested' events, warnings/errors"
            f" {m['log_warnings_and_errors'] or 'none'}; examining children: up to"
            f" {m['children_max_count']}, peak RSS (sum) {m['children_peak_rss_kib'] / 1024:.0f}"
            f" MiB, CPU {m['examiners_cpu_s']:.1f} s; workers {m['workers']}"
            f" (CPU {m.get('workers_cpu_s', 0):.1f} s); CPU cores (own/foreign)"
            f" {m['cpu']['own_cores']:.2f}/{m['foreign_cores']:.2f}; attempt {m['attempt']};"
            f" exit code {m.get('exit_code')}."
        )
    lines += [
        "",
        "The watcher's bookkeeping per tick (`StabilityTracker.ready()` + `next_due()`, all"
        " files past their quiet period, best of 5):",
        "",
        "| files pending | seen at one instant (start-up scan) ms | seen at distinct instants"
        " (events) ms |",
        "|---:|---:|---:|",
    ]
    for n, t in report["tick_cost"].items():
        lines.append(f"| {n} | {t['one_instant_ms']:.2f} | {t['distinct_instants_ms']:.2f} |")
    lines += [
        "",
        f"Re-measured as disturbed (> {FOREIGN_LOAD_LIMIT} foreign cores):"
        f" {len(report['discarded_disturbed'])}. Shutdown: {report['shutdown']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 files instead of 10,000")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument(
        "--variants",
        nargs="*",
        choices=["flood", "startup"],
        default=["flood", "startup"],
        help="none: only the per-tick bookkeeping micro-benchmark",
    )
    parser.add_argument("--retries", type=int, default=2, help="re-measure a disturbed variant")
    parser.add_argument("--max-quiet-wait", type=float, default=60.0)
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="run N `ai2text worker` processes (one job each) transcribing the flood as it queues",
    )
    parser.add_argument("--model", default="tiny.en", help="asr.model of --workers")
    parser.add_argument(
        "--ingest-processes", type=int, help="watch.ingest_processes (default: the setting's)"
    )
    parser.add_argument(
        "--ingest-concurrency", type=int, help="watch.ingest_concurrency (default: the setting's)"
    )
    parser.add_argument(
        "--profile-watcher",
        type=Path,
        help="run the watcher under cProfile, writing PATH.<variant>.prof (slows it down)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.retries, args.max_quiet_wait = 300, 0, 5.0
    return run_and_report("inbox-flood", args, run, markdown)


if __name__ == "__main__":
    sys.exit(main())
