#!/usr/bin/env python
"""Worker scaling: 1, 2 and 4 ``ai2text worker`` processes against faster-whisper in a loop.

Run from the repository root:

    .venv/bin/python bench/worker_scaling.py            # full: 5 copies of each test file, 2 rounds
    .venv/bin/python bench/worker_scaling.py --quick    # seconds: 3 small files, 1 and 2 workers

One PostgreSQL (pgserver) serves the run. For every configuration (N workers, CTranslate2
``cpu_threads``) a fresh database and data directory (filesystem object store) are
loaded with the same byte-distinct copies of the test recordings through the project's
``Ingestor``; then N ``ai2text worker`` processes start at once and the script polls
the jobs table until every job is done. The baseline is one process running
``WhisperModel(...).transcribe(path, beam_size=5, vad_filter=True)`` over the same files.
Every worker transcript is compared with the baseline's text for the same file.
Results: bench/results/worker-scaling-<stamp>.{json,md}; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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
    event_epoch,
    log,
    machine_info,
    median,
    read_events,
    run_and_report,
    stop_process,
    thread_count,
)
from bench.sysload import CpuWindow  # noqa: E402
from bench.variants import make_variant  # noqa: E402

DATA = REPO / "tests" / "data"
ALL_SOURCES = ("jfk.flac", "hotwords.mp3", "multilingual.mp3", "stereo_diarization.wav")
QUICK_SOURCES = ("jfk.flac", "hotwords.mp3", "stereo_diarization.wav")
BEAM_SIZE = 5
NCORES = len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Item:
    """One byte-distinct copy of a test recording, the same for every configuration."""

    name: str
    path: Path
    source: str
    audio_s: float


@dataclass(frozen=True)
class Config:
    workers: int  # 0 = the plain faster-whisper baseline
    cpu_threads: int
    # Jobs each process transcribes at once (AI2TEXT_ASR__CONCURRENCY), sharing one model.
    per_process: int = 1

    @property
    def label(self) -> str:
        if self.workers == 0:
            return "baseline"
        if self.per_process > 1:
            return f"{self.workers}p{self.per_process}j-t{self.cpu_threads}"
        return f"{self.workers}w-t{self.cpu_threads}"


def make_items(work: Path, sources: tuple[str, ...], copies: int) -> list[Item]:
    from pipeline.media import probe

    nonce = secrets.token_hex(4)
    (work / "variants").mkdir(parents=True, exist_ok=True)
    items = []
    for c in range(copies):
        for source in sources:
            name = f"c{c:02d}-{source}"
            dest = make_variant(DATA / source, work / "variants" / name, f"{nonce}:{name}")
            with open(dest, "rb") as f:
                duration = probe(f, max_duration_s=1e6).duration_s
            items.append(Item(name, dest, source, round(duration, 3)))
    return items


# -- the baseline: faster-whisper in a loop ---------------------------------------------


class Baseline:
    def __init__(self, model: str) -> None:
        from faster_whisper import WhisperModel

        from workers.engines.faster_whisper import model_files

        self.model_path = model_files(model, None)
        started = time.perf_counter()
        self.model = WhisperModel(self.model_path, device="cpu", compute_type="int8")
        self.load_s = round(time.perf_counter() - started, 3)
        warm = time.perf_counter()
        self.transcribe(DATA / "jfk.flac")  # excluded warm-up
        self.warmup_s = round(time.perf_counter() - warm, 3)

    def transcribe(self, path: Path) -> str:
        segments, _info = self.model.transcribe(str(path), beam_size=BEAM_SIZE, vad_filter=True)
        texts = [s.text for s in segments]  # the generator does the decoding work
        return " ".join(t.strip() for t in texts if t.strip())

    def measure(self, items: list[Item]) -> dict[str, Any]:
        me = os.getpid()
        window = CpuWindow(lambda: [me]).start()
        per_file: dict[str, dict[str, Any]] = {}
        started = time.perf_counter()
        for item in items:
            t = time.perf_counter()
            text = self.transcribe(item.path)
            per_file[item.name] = {"s": round(time.perf_counter() - t, 4), "text": text}
        wall = time.perf_counter() - started
        cpu = window.stop()
        audio = sum(i.audio_s for i in items)
        return {
            "config": "baseline",
            "workers": 0,
            "cpu_threads": 0,
            "wall_total_s": round(wall, 3),
            "wall_work_s": round(wall, 3),
            "audio_s": round(audio, 2),
            "files": len(items),
            "rate_total": round(audio / wall, 2),
            "rate_work": round(audio / wall, 2),
            "files_per_min_work": round(60 * len(items) / wall, 1),
            "per_file": per_file,
            "cpu": cpu,
            "foreign_cores": cpu["foreign_cores"],
            "own_cores": cpu["own_cores"],
        }


# -- N worker processes -----------------------------------------------------------------


async def _ingest(url: str, data_dir: Path, items: list[Item]) -> None:
    from ai2text.components import ingestor_of
    from pipeline.config import Settings
    from pipeline.db.database import Database
    from pipeline.ingest.core import Arrival
    from pipeline.metrics import Metrics
    from pipeline.storage import open_store

    settings = Settings(data_dir=data_dir, database={"url": url})  # type: ignore[arg-type]
    db = Database(settings.database, embedded=None)
    await db.open()
    try:
        store = open_store(settings.storage, settings.data_dir)
        ingestor = ingestor_of(settings, db, store, Metrics())
        for item in items:
            with open(item.path, "rb") as f:  # noqa: ASYNC230 - set-up, not measured
                arrival = Arrival("folder", item.name, item.path.as_uri(), "bench-v1")
                result = await ingestor.ingest(arrival, f, item.path.stat().st_size)
            if result.outcome != "accepted":
                raise RuntimeError(f"{item.name}: ingest said {result.outcome} ({result.reason})")
    finally:
        await db.close()


def worker_env(url: str, data_dir: Path, config: Config, model: str) -> dict[str, str]:
    return clean_env(
        AI2TEXT_ASR__MODEL=model,
        AI2TEXT_ASR__CONCURRENCY=str(config.per_process),
        AI2TEXT_DATABASE__URL=url,
        AI2TEXT_DATA_DIR=str(data_dir),
        AI2TEXT_ASR__DEVICE="cpu",
        AI2TEXT_ASR__COMPUTE_TYPE="int8",
        AI2TEXT_ASR__CPU_THREADS=str(config.cpu_threads),
        AI2TEXT_LOG_FORMAT="json",
        AI2TEXT_GATEWAY__ENABLED="false",
        AI2TEXT_SHUTDOWN_GRACE_S="5",
    )


class WorkerRun:
    """One measurement: a fresh database and data dir, the queue loaded, N workers."""

    def __init__(
        self, pg: PgServer, work: Path, items: list[Item], config: Config, model: str
    ) -> None:
        self.pg = pg
        self.model = model
        self.items = items
        self.config = config
        self.root = Path(tempfile.mkdtemp(prefix=f"{config.label}-", dir=work))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def own_pids(self) -> list[int]:
        return [os.getpid(), *(p.pid for p in self.procs), *self.pg.pids()]

    def measure(self, attempt: int) -> dict[str, Any]:
        import psycopg

        url = self.pg.create_database("ws_" + self.config.label.replace("-", "_"))
        data_dir = self.root / f"attempt{attempt}"
        asyncio.run(_ingest(url, data_dir, self.items))
        n = len(self.items)
        with psycopg.connect(url, autocommit=True) as conn:
            queued = conn.execute("SELECT count(*) FROM jobs WHERE state = 'queued'").fetchone()
            assert queued is not None and queued[0] == n, f"{queued} jobs queued, expected {n}"
            try:
                result = self._run(conn, url, data_dir, attempt)
            finally:
                codes = [stop_process(p) for p in self.procs]
            result["exit_codes"] = codes
            result.update(self._collect(conn))
        self.pg.drop_database(url)
        derive(result, self.items, self.config)
        self.procs = []
        return result

    def _run(self, conn: Any, url: str, data_dir: Path, attempt: int) -> dict[str, Any]:
        env = worker_env(url, data_dir, self.config, self.model)
        self.logs = [data_dir / f"worker{i}.log" for i in range(self.config.workers)]
        n = len(self.items)
        deadline = time.monotonic() + 120 + 2 * sum(i.audio_s for i in self.items)
        window = CpuWindow(self.own_pids).start()
        t0 = time.time()
        for path in self.logs:
            with open(path, "ab") as out:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "ai2text", "worker"],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=REPO,
                    )
                )
        threads: list[int] = [0] * len(self.procs)
        while True:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE state = 'done'),"
                " count(*) FILTER (WHERE state IN ('dead', 'failed')) FROM jobs"
            ).fetchone()
            for i, p in enumerate(self.procs):
                threads[i] = max(threads[i], thread_count(p.pid) or 0)
            if row[0] + row[1] >= n:
                break
            for p, path in zip(self.procs, self.logs, strict=True):
                if p.poll() is not None:
                    tail = path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"worker exited with {p.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.config.label}: jobs not done in time ({row})")
            time.sleep(0.1)
        cpu = window.stop()
        return {"t0": t0, "cpu": cpu, "max_threads_per_worker": threads, "failed_jobs": row[1]}

    def _collect(self, conn: Any) -> dict[str, Any]:
        times = conn.execute(
            "SELECT extract(epoch FROM max(finished_at)), extract(epoch FROM min(started_at))"
            " FROM jobs"
        ).fetchone()
        rows = conn.execute(
            "SELECT a.original_name, t.text, t.processing_s, t.worker_id, a.duration_s"
            " FROM transcripts t JOIN audio a ON a.id = t.audio_id"
        ).fetchall()
        per_worker = conn.execute(
            "SELECT worker_id, count(*) FROM jobs GROUP BY worker_id ORDER BY worker_id"
        ).fetchall()
        retried = conn.execute("SELECT count(*) FROM jobs WHERE attempts > 1").fetchone()
        ready, loads = [], []
        for path in self.logs:
            events = read_events(path)
            ready += [event_epoch(e) for e in events if e.get("event") == "worker ready"]
            loads += [e.get("seconds") for e in events if e.get("event") == "model loaded"]
        return {
            "last_done_epoch": float(times[0]),
            "first_claim_epoch": float(times[1]),
            "ready_epochs": ready,
            "model_load_s": loads,
            "transcripts": {
                r[0]: {"text": r[1], "processing_s": r[2], "worker_id": r[3], "audio_s": r[4]}
                for r in rows
            },
            "jobs_per_worker": {str(r[0]): r[1] for r in per_worker},
            "jobs_retried": retried[0] if retried else None,
            "logs": [str(p) for p in self.logs],
        }


def derive(m: dict[str, Any], items: list[Item], config: Config) -> None:
    """Walls and rates from the timestamps of one worker measurement."""
    audio = sum(i.audio_s for i in items)
    t0, done = m["t0"], m["last_done_epoch"]
    ready = sorted(m["ready_epochs"])
    first_ready = ready[0] if ready else m["first_claim_epoch"]
    m.update(
        config=config.label,
        workers=config.workers,
        per_process=config.per_process,
        cpu_threads=config.cpu_threads,
        audio_s=round(audio, 2),
        files=len(items),
        wall_total_s=round(done - t0, 3),
        startup_first_ready_s=round(first_ready - t0, 3),
        startup_last_ready_s=round(ready[-1] - t0, 3) if ready else None,
        wall_work_s=round(done - first_ready, 3),
        foreign_cores=m["cpu"]["foreign_cores"],
        own_cores=m["cpu"]["own_cores"],
    )
    m["rate_total"] = round(audio / m["wall_total_s"], 2)
    m["rate_work"] = round(audio / m["wall_work_s"], 2)
    m["files_per_min_total"] = round(60 * len(items) / m["wall_total_s"], 1)
    m["files_per_min_work"] = round(60 * len(items) / m["wall_work_s"], 1)


def compare_texts(m: dict[str, Any], baseline_texts: dict[str, str]) -> None:
    mismatches = []
    for name, expected in baseline_texts.items():
        got = m["transcripts"].get(name)
        if got is None:
            mismatches.append({"file": name, "worker": None, "baseline": expected})
        elif got["text"] != expected:
            mismatches.append({"file": name, "worker": got["text"], "baseline": expected})
    m["text_mismatches"] = mismatches


# -- the run ------------------------------------------------------------------------------


def only_me() -> list[int]:
    return [os.getpid()]


def configs_for(workers: list[int], in_process: list[int]) -> list[Config]:
    out = [Config(0, 0)]
    for n in workers:
        out.append(Config(n, 0))
        explicit = max(1, NCORES // n)
        out.append(Config(n, explicit))
    for n in in_process:  # one process, n jobs at once on one shared model
        out.append(Config(1, max(1, NCORES // n), per_process=n))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.logs import configure_logging

    configure_logging(fmt="console", level="warning")  # the ingest set-up's own logs
    work = Path(tempfile.mkdtemp(prefix="ai2text-bench-ws-"))
    work.chmod(0o755)
    report: dict[str, Any] = {"machine": machine_info(), "args": vars(args) | {"out": None}}
    guard = Guard(retries=args.retries, max_quiet_wait_s=args.max_quiet_wait)
    pg = PgServer().start()
    log(f"PostgreSQL up in {pg.pgdata}")
    try:
        items = make_items(work, tuple(args.files), args.copies)
        report["items"] = [
            {"name": i.name, "source": i.source, "audio_s": i.audio_s} for i in items
        ]
        log(f"{len(items)} files, {sum(i.audio_s for i in items):.1f} s of audio")
        base = Baseline(args.model)
        report["baseline_model"] = {
            "name": args.model,
            "path": base.model_path,
            "load_s": base.load_s,
            "warmup_s": base.warmup_s,
        }
        configs = configs_for(args.workers, args.in_process)
        measurements: list[dict[str, Any]] = []
        baseline_texts: dict[str, str] | None = None
        for rnd in range(args.rounds):
            order = configs if rnd % 2 == 0 else list(reversed(configs))
            for config in order:
                log(f"round {rnd + 1}: {config.label}")
                if config.workers == 0:
                    m = guard.run(f"r{rnd + 1} baseline", lambda _a: base.measure(items), only_me)
                    if baseline_texts is None:
                        baseline_texts = {k: v["text"] for k, v in m["per_file"].items()}
                    else:
                        m["text_differs_from_first_baseline"] = [
                            k for k, v in m["per_file"].items() if v["text"] != baseline_texts[k]
                        ]
                else:
                    runner = WorkerRun(pg, work, items, config, args.model)
                    m = guard.run(f"r{rnd + 1} {config.label}", runner.measure, runner.own_pids)
                m["round"] = rnd + 1
                measurements.append(m)
                log(
                    f"  {config.label}: wall {m['wall_total_s']:.1f} s, work {m['wall_work_s']:.1f}"
                    f" s, {m['rate_work']:.1f} audio s/s, foreign {m['foreign_cores']:.2f}"
                )
        assert baseline_texts is not None
        for m in measurements:
            if m["workers"]:
                compare_texts(m, baseline_texts)
        report["baseline_texts"] = baseline_texts
        report["measurements"] = measurements
        report["discarded_disturbed"] = guard.discarded
    finally:
        report["shutdown"] = pg.stop()
        if args.keep_temp:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report["summary"] = summarise(report["measurements"])
    return report


def summarise(measurements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for m in measurements:
        rows.setdefault(m["config"], []).append(m)
    base_work = median([m["wall_work_s"] for m in rows["baseline"]])
    out = []
    for label, ms in rows.items():

        def med(key: str, ms: list[dict[str, Any]] = ms) -> float:
            return median([m[key] for m in ms])

        row = {
            "config": label,
            "workers": ms[0]["workers"],
            "per_process": ms[0].get("per_process", 1),
            "cpu_threads": ms[0]["cpu_threads"],
            "n": len(ms),
            "audio_s": ms[0]["audio_s"],
            "files": ms[0]["files"],
            "wall_total_s": med("wall_total_s"),
            "wall_work_s": med("wall_work_s"),
            "rate_total": med("rate_total"),
            "rate_work": med("rate_work"),
            "files_per_min_work": med("files_per_min_work"),
            "vs_baseline": round(base_work / med("wall_work_s"), 2),
            "own_cores": med("own_cores"),
            "max_foreign_cores": max(m["foreign_cores"] for m in ms),
            "disturbed_kept": sum(1 for m in ms if m["disturbed"]),
        }
        if ms[0]["workers"]:
            row["startup_first_ready_s"] = med("startup_first_ready_s")
            row["startup_last_ready_s"] = median(
                [m["startup_last_ready_s"] for m in ms if m["startup_last_ready_s"] is not None]
            )
            row["threads"] = max(max(m["max_threads_per_worker"]) for m in ms)
            row["text_mismatches"] = sum(len(m["text_mismatches"]) for m in ms)
            row["jobs_retried"] = sum(m["jobs_retried"] or 0 for m in ms)
            row["failed_jobs"] = sum(m["failed_jobs"] for m in ms)
        out.append(row)
    return out


def procs_jobs(r: dict[str, Any]) -> str:
    if not r["workers"]:
        return "1 (plain)"
    if r["per_process"] > 1:
        return f"{r['workers']} process, {r['per_process']} jobs at once"
    return str(r["workers"])


def markdown(report: dict[str, Any]) -> str:
    mach = report["machine"]
    items = report["items"]
    lines = [
        f"Worker scaling, model {report['args']['model']}, {mach['started']}, commit"
        f" {mach['git_commit']}; {mach['nproc']} cores"
        f" ({mach['cpu_model']}), {mach['mem_gib']} GiB. {len(items)} files,"
        f" {sum(i['audio_s'] for i in items):.1f} s of audio; medians over"
        f" {report['args']['rounds']} round(s).",
        "",
        "| config | workers | cpu_threads | wall incl. start-up s | start-up to first/last"
        " ready s | work wall s | audio s per wall s (incl. start-up) | audio s per wall s"
        " (work) | files/min (work) | vs baseline | CPU cores used | threads/proc | text"
        " mismatches | max foreign cores |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["summary"]:
        if r["workers"] == 0:
            startup, threads, mism = "— (model load excluded)", "", "(reference)"
        else:
            startup = f"{r['startup_first_ready_s']:.1f} / {r['startup_last_ready_s']:.1f}"
            threads, mism = str(r["threads"]), str(r["text_mismatches"])
        lines.append(
            f"| {r['config']} | {procs_jobs(r)} | {r['cpu_threads']}"
            f" | {r['wall_total_s']:.1f} | {startup} | {r['wall_work_s']:.1f}"
            f" | {r['rate_total']:.1f} | {r['rate_work']:.1f} | {r['files_per_min_work']:.0f}"
            f" | {r['vs_baseline']:.2f}x | {r['own_cores']:.2f} | {threads} | {mism}"
            f" | {r['max_foreign_cores']:.2f} |"
        )
    bm = report["baseline_model"]
    lines += [
        "",
        f"Baseline model load {bm['load_s']:.2f} s and warm-up {bm['warmup_s']:.2f} s excluded."
        f" Re-measured as disturbed (> {FOREIGN_LOAD_LIMIT} foreign cores):"
        f" {len(report['discarded_disturbed'])}; kept although disturbed:"
        f" {sum(r['disturbed_kept'] for r in report['summary'])}. Shutdown: {report['shutdown']}.",
        "",
        "Every measurement:",
        "",
        "| round | config | attempt | wall s | work wall s | audio s/s (work) | jobs per worker"
        " | retried | foreign cores | exit codes |",
        "|---:|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for m in report["measurements"]:
        per_worker = " ".join(str(v) for v in m.get("jobs_per_worker", {}).values()) or "—"
        lines.append(
            f"| {m['round']} | {m['config']} | {m['attempt']} | {m['wall_total_s']:.1f}"
            f" | {m['wall_work_s']:.1f} | {m['rate_work']:.1f} | {per_worker}"
            f" | {m.get('jobs_retried', '—')} | {m['foreign_cores']:.2f}"
            f" | {m.get('exit_codes', '—')} |"
        )
    mismatches = [
        (m["config"], x) for m in report["measurements"] for x in m.get("text_mismatches", [])
    ]
    if mismatches:
        lines += ["", "Text mismatches (worker vs baseline):", ""]
        for label, x in mismatches:
            lines.append(
                f"- {label} {x['file']}: worker {x['worker']!r} / baseline {x['baseline']!r}"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 small files, 1 and 2 workers")
    parser.add_argument("--copies", type=int, default=5, help="copies of each file (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over every config")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--model", default="tiny.en", help="asr.model for baseline and workers")
    parser.add_argument(
        "--in-process",
        type=int,
        nargs="+",
        default=[2],
        help="also one process transcribing N jobs at once (AI2TEXT_ASR__CONCURRENCY)",
    )
    parser.add_argument("--files", nargs="+", choices=ALL_SOURCES, default=list(ALL_SOURCES))
    parser.add_argument("--retries", type=int, default=3, help="re-measure a disturbed config")
    parser.add_argument("--max-quiet-wait", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--keep-temp", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.copies, args.rounds, args.workers = 1, 1, [1, 2]
        args.files = list(QUICK_SOURCES)
        args.retries, args.max_quiet_wait = 0, 5.0
    return run_and_report("worker-scaling", args, run, markdown)


if __name__ == "__main__":
    sys.exit(main())
