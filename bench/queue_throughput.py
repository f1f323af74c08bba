#!/usr/bin/env python
"""Queue throughput: jobs claimed and completed per second with empty work (no model).

Run from the repository root:

    .venv/bin/python bench/queue_throughput.py            # K = 5,000 jobs per measurement
    .venv/bin/python bench/queue_throughput.py --quick    # K = 200, C = 1 and 2

Against one real PostgreSQL (pgserver) started here, each measurement gets a fresh
database (the project's migrations) holding K queued jobs, then C concurrent claimers
loop until the queue is empty, doing exactly what the ASR worker does around the model:

- ``queue``: ``pipeline.db.jobs.claim`` on a pooled connection, then in one transaction
  ``jobs.mark_done`` + ``jobs.notify_finished``;
- ``commit``: ``jobs.claim``, then the worker's whole save step
  (``workers.results.save_transcription``: transcript JSON and manifest shard written to a
  filesystem store with fsync, then the fenced transaction with the transcript and one
  segment) for an empty one-segment transcription.

Claimers are asyncio tasks in one process sharing one pool (``tasks``) or separate
processes with a pool each (``procs``). Results: bench/results/queue-throughput-<stamp>.*.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    FOREIGN_LOAD_LIMIT,
    Guard,
    PgServer,
    log,
    machine_info,
    percentile,
    run_and_report,
)
from bench.sysload import CpuWindow  # noqa: E402

LEASE_S = 60.0  # QueueSettings.lease_s default


@dataclass
class Stats:
    worker_id: str
    jobs: int = 0
    claim_s: list[float] = field(default_factory=list)
    finish_s: list[float] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0


@dataclass(frozen=True)
class _Model:
    """What ``save_transcription`` reads from a transcriber."""

    model_name: str = "bench-empty"
    device: str = "cpu"
    compute_type: str = "int8"


async def claim_loop(db: Any, worker_id: str, mode: str, store: Any = None) -> Stats:
    """Claim and finish jobs until the queue is empty, as the worker does."""
    from pipeline.db import jobs

    stats = Stats(worker_id, started=time.time())
    result = _empty_transcription() if mode == "commit" else None
    while True:
        t0 = time.perf_counter()
        async with db.connection() as conn:
            job = await jobs.claim(conn, worker_id=worker_id, lease_s=LEASE_S)
        t1 = time.perf_counter()
        if job is None:
            break
        if mode == "commit":
            from workers.results import save_transcription

            await save_transcription(
                db,
                store,
                job,
                result,  # type: ignore[arg-type]
                storage_key=job.storage_key or "",
                transcriber=_Model(),  # type: ignore[arg-type]
                worker_id=worker_id,
            )
        else:
            async with db.connection() as conn, conn.transaction():
                await jobs.mark_done(conn, job, language="en")
                await jobs.notify_finished(conn, job.audio_id)
        t2 = time.perf_counter()
        stats.jobs += 1
        stats.claim_s.append(t1 - t0)
        stats.finish_s.append(t2 - t1)
    stats.ended = time.time()
    return stats


def _empty_transcription() -> Any:
    from workers.transcription import Segment, Transcription

    return Transcription(
        language="en",
        language_probability=1.0,
        audio_duration_s=1.0,
        processing_s=0.0,
        segments=[Segment(start=0.0, end=1.0, text="bench")],
    )


async def open_db(url: str, pool_size: int) -> Any:
    from pipeline.config import DatabaseSettings
    from pipeline.db.database import Database

    settings = DatabaseSettings(url=url, pool_min_size=pool_size, pool_max_size=pool_size)  # type: ignore[arg-type]
    db = Database(settings, embedded=None)
    await db.open(run_migrations=False)
    return db


# -- claimers in separate processes --------------------------------------------------------


def _child(
    url: str, worker_id: str, mode: str, store_root: str, go: Any, release: Any, pipe: Any
) -> None:
    asyncio.run(_child_main(url, worker_id, mode, store_root, go, release, pipe))


async def _child_main(
    url: str, worker_id: str, mode: str, store_root: str, go: Any, release: Any, pipe: Any
) -> None:
    from pipeline.storage import FilesystemStore

    db = await open_db(url, 1)
    try:
        store = FilesystemStore(Path(store_root))
        pipe.send("ready")
        await asyncio.to_thread(go.wait)
        stats = await claim_loop(db, worker_id, mode, store)
        pipe.send(stats)
        # Stay alive until the parent has read our CPU time: an exited child's is gone.
        await asyncio.to_thread(release.wait, 60)
    finally:
        await db.close()


# -- one measurement ----------------------------------------------------------------------


def load_jobs(url: str, k: int) -> None:
    """The project's schema (migrations), then K queued audio rows with one job each."""
    import psycopg

    from pipeline.db.migrate import migrate

    with psycopg.connect(url) as conn:
        migrate(conn)
        conn.execute(
            "INSERT INTO audio (source, original_name, source_uri, source_version, sha256,"
            " size_bytes, duration_s, storage_key, state)"
            " SELECT 'folder', 'q' || i || '.wav', 'file:///bench/q' || i || '.wav', 'v1',"
            "  encode(sha256(convert_to('bench-' || i::text, 'UTF8')), 'hex'), 1000, 1.0,"
            "  'audio/q' || i || '.wav', 'queued'"
            " FROM generate_series(1, %s) AS i",
            (k,),
        )
        conn.execute(
            "INSERT INTO jobs (audio_id, max_attempts)"
            " SELECT id, 5 FROM audio ORDER BY original_name"
        )
        conn.execute("ANALYZE audio")
        conn.execute("ANALYZE jobs")


def claim_plan(conn: Any) -> list[str]:
    """EXPLAIN (without running it) of the very statement ``jobs.claim`` executes."""
    from pipeline.db import jobs

    sql = "EXPLAIN " + jobs._CLAIM  # noqa: SLF001 - the real statement, not a copy
    rows = conn.execute(sql, {"lease_s": LEASE_S, "worker_id": "bench-explain"}).fetchall()
    return [r[0] for r in rows]


class Measurement:
    def __init__(self, pg: PgServer, work: Path, mode: str, runner: str, c: int, k: int) -> None:
        self.pg = pg
        self.work = work
        self.mode = mode
        self.runner = runner
        self.c = c
        self.k = k
        self.children: list[Any] = []

    @property
    def label(self) -> str:
        return f"{self.mode}/{self.runner} C={self.c}"

    def own_pids(self) -> list[int]:
        return [os.getpid(), *(p.pid for p in self.children if p.pid), *self.pg.pids()]

    def measure(self, attempt: int) -> dict[str, Any]:
        import psycopg

        url = self.pg.create_database(f"qt_{self.mode}_{self.runner}_{self.c}")
        store_root = Path(tempfile.mkdtemp(prefix="store-", dir=self.work))
        load_jobs(url, self.k)
        with psycopg.connect(url, autocommit=True) as conn:
            plan_before = claim_plan(conn)
        if self.runner == "tasks":
            stats, go, cpu = asyncio.run(self._tasks(url, store_root))
        else:
            stats, go, cpu = self._procs(url, store_root)
        result = self._check(url, stats, go, cpu)
        result["claim_plan_at_start"] = plan_before
        result["idle_claim_ms"] = asyncio.run(self._idle_claims(url))
        self.pg.drop_database(url)
        shutil.rmtree(store_root, ignore_errors=True)
        return result

    async def _tasks(
        self, url: str, store_root: Path
    ) -> tuple[list[Stats], float, dict[str, float]]:
        from pipeline.storage import FilesystemStore

        db = await open_db(url, self.c)
        try:
            store = FilesystemStore(store_root)
            window = CpuWindow(self.own_pids).start()
            go = time.time()
            stats = await asyncio.gather(
                *(
                    claim_loop(db, f"bench:{os.getpid()}:{i}", self.mode, store)
                    for i in range(self.c)
                )
            )
            cpu = window.stop()
        finally:
            await db.close()
        return list(stats), go, cpu

    def _procs(self, url: str, store_root: Path) -> tuple[list[Stats], float, dict[str, float]]:
        ctx = mp.get_context("spawn")
        go, release = ctx.Event(), ctx.Event()
        pipes = []
        try:
            for i in range(self.c):
                parent_end, child_end = ctx.Pipe()
                proc = ctx.Process(
                    target=_child,
                    args=(
                        url,
                        f"bench-proc:{i}",
                        self.mode,
                        str(store_root),
                        go,
                        release,
                        child_end,
                    ),
                    daemon=True,
                )
                proc.start()
                self.children.append(proc)
                pipes.append(parent_end)
            for p in pipes:
                if not p.poll(120):
                    raise TimeoutError("a claimer process did not get ready")
                assert p.recv() == "ready"
            window = CpuWindow(self.own_pids).start()
            t_go = time.time()
            go.set()
            stats = [p.recv() for p in pipes]
            cpu = window.stop()
            release.set()
            for proc in self.children:
                proc.join(timeout=30)
        finally:
            for proc in self.children:
                if proc.is_alive():
                    proc.terminate()
                    proc.join(timeout=10)
            self.children = []
        return stats, t_go, cpu

    def _check(
        self, url: str, stats: list[Stats], go: float, cpu: dict[str, float]
    ) -> dict[str, Any]:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            states = dict(
                conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
            )
            multi = conn.execute("SELECT count(*) FROM jobs WHERE attempts <> 1").fetchone()
            audio = dict(
                conn.execute("SELECT state, count(*) FROM audio GROUP BY state").fetchall()
            )
            transcripts = conn.execute("SELECT count(*) FROM transcripts").fetchone()
        wall = max(s.ended for s in stats) - go
        claims = [x for s in stats for x in s.claim_s]
        finishes = [x for s in stats for x in s.finish_s]
        # Each claimer's first and last tenth of claims: does claiming slow down as done
        # rows pile up in the table?
        first = [x for s in stats for x in s.claim_s[: max(1, len(s.claim_s) // 10)]]
        last = [x for s in stats for x in s.claim_s[-max(1, len(s.claim_s) // 10) :]]
        return {
            "label": self.label,
            "mode": self.mode,
            "runner": self.runner,
            "c": self.c,
            "k": self.k,
            "jobs_done": sum(s.jobs for s in stats),
            "jobs_per_claimer": [s.jobs for s in stats],
            "wall_s": round(wall, 3),
            "jobs_per_s": round(sum(s.jobs for s in stats) / wall, 1),
            "claim_ms": _dist(claims),
            "finish_ms": _dist(finishes),
            "claim_ms_first_tenth_p50": round(1000 * percentile(first, 50), 3),
            "claim_ms_last_tenth_p50": round(1000 * percentile(last, 50), 3),
            "job_states": states,
            "audio_states": audio,
            "transcripts": transcripts[0] if transcripts else None,
            "jobs_with_attempts_not_1": multi[0] if multi else None,
            "cpu": cpu,
            "foreign_cores": cpu["foreign_cores"],
            "own_cores": cpu["own_cores"],
        }

    async def _idle_claims(self, url: str, n: int = 200) -> dict[str, float]:
        """What an idle worker's poll costs once the queue holds K finished jobs."""
        from pipeline.db import jobs

        db = await open_db(url, 1)
        try:
            times = []
            for _ in range(n):
                t = time.perf_counter()
                async with db.connection() as conn:
                    job = await jobs.claim(conn, worker_id="bench-idle", lease_s=LEASE_S)
                times.append(time.perf_counter() - t)
                assert job is None
        finally:
            await db.close()
        return _dist(times)


def plan_summary(plan: list[str]) -> str:
    """How the plan reads the jobs table: its scan and sort nodes on ``jobs``, in order."""
    nodes: list[str] = []
    for line in plan:
        text = line.strip().removeprefix("->").strip().split("  (cost=", 1)[0]
        if ("Scan" in text and " on jobs" in text) or text == "Sort":
            nodes.append(text)
    return ", ".join(nodes)


async def depth_probe(pg: PgServer, depth: int, n: int) -> dict[str, Any]:
    """Latency of one claim and one finish (C = 1) with ``depth`` jobs queued."""
    import psycopg

    url = pg.create_database(f"qt_depth_{depth}")
    load_jobs(url, depth)
    with psycopg.connect(url, autocommit=True) as conn:
        plan = claim_plan(conn)
    db = await open_db(url, 1)
    try:
        from pipeline.db import jobs

        claims, finishes = [], []
        window = CpuWindow(lambda: [os.getpid(), *pg.pids()]).start()
        for _ in range(n):
            t0 = time.perf_counter()
            async with db.connection() as conn:
                job = await jobs.claim(conn, worker_id="bench-depth", lease_s=LEASE_S)
            t1 = time.perf_counter()
            assert job is not None
            async with db.connection() as conn, conn.transaction():
                await jobs.mark_done(conn, job, language="en")
                await jobs.notify_finished(conn, job.audio_id)
            claims.append(t1 - t0)
            finishes.append(time.perf_counter() - t1)
        cpu = window.stop()
        # A long-lived deployment: every job ever run stays in the table as 'done'
        # (vacuumed, as autovacuum would have done by then).
        with psycopg.connect(url, autocommit=True) as sync_conn:
            sync_conn.execute(
                "UPDATE jobs SET state = 'done', finished_at = now(), lease_token = NULL,"
                " lease_expires_at = NULL WHERE state <> 'done'"
            )
            sync_conn.execute("VACUUM ANALYZE jobs")
        idle = []
        for _ in range(n):
            t0 = time.perf_counter()
            async with db.connection() as conn:
                job = await jobs.claim(conn, worker_id="bench-depth", lease_s=LEASE_S)
            idle.append(time.perf_counter() - t0)
            assert job is None
    finally:
        await db.close()
    with psycopg.connect(url, autocommit=True) as conn:
        idle_plan = claim_plan(conn)
    pg.drop_database(url)
    return {
        "depth": depth,
        "n": n,
        "claim_ms": _dist(claims),
        "finish_ms": _dist(finishes),
        "plan": plan,
        "plan_summary": plan_summary(plan),
        "idle_claim_all_done_ms": _dist(idle),
        "idle_plan_summary": plan_summary(idle_plan),
        "cpu": cpu,
        "foreign_cores": cpu["foreign_cores"],
    }


def _dist(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(1000 * percentile(values, 50), 3),
        "p99": round(1000 * percentile(values, 99), 3),
        "max": round(1000 * max(values), 3),
    }


# -- the run --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.logs import configure_logging

    configure_logging(fmt="console", level="warning")
    work = Path(tempfile.mkdtemp(prefix="ai2text-bench-queue-"))
    work.chmod(0o755)
    report: dict[str, Any] = {"machine": machine_info(), "args": vars(args) | {"out": None}}
    guard = Guard(retries=args.retries, max_quiet_wait_s=args.max_quiet_wait)
    pg = PgServer().start()
    log(f"PostgreSQL up in {pg.pgdata}")
    measurements = []
    try:
        for mode, runner in args.modes:
            k = args.commit_jobs if mode == "commit" else args.jobs
            for c in args.claimers:
                meas = Measurement(pg, work, mode, runner, c, k)
                m = guard.run(meas.label, meas.measure, meas.own_pids)
                log(
                    f"{meas.label}: {m['jobs_per_s']:.0f} jobs/s ({m['jobs_done']} in"
                    f" {m['wall_s']:.1f} s), foreign {m['foreign_cores']:.2f}"
                )
                measurements.append(m)
        depths = []
        for depth in args.depths:
            d = asyncio.run(depth_probe(pg, depth, args.depth_claims))
            log(f"depth {depth}: claim p50 {d['claim_ms']['p50']:.2f} ms ({d['plan_summary']})")
            depths.append(d)
    finally:
        report["shutdown"] = pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    report["depths"] = depths
    report["measurements"] = measurements
    report["discarded_disturbed"] = guard.discarded
    return report


def markdown(report: dict[str, Any]) -> str:
    mach = report["machine"]
    lines = [
        f"Queue throughput, {mach['started']}, commit {mach['git_commit']}; {mach['nproc']} cores"
        f" ({mach['cpu_model']}), {mach['mem_gib']} GiB; PostgreSQL (pgserver) on the same"
        " machine, Unix socket.",
        "",
        "| work | claimers | C | K jobs | jobs/s | wall s | claim ms p50 / p99"
        " | finish ms p50 / p99 | claim p50 first / last tenth ms | idle claim ms p50"
        " | CPU cores used (all own)"
        " | done / attempts≠1 | foreign cores |",
        "|---|---|---:|---:|---:|---:|---|---|---|---:|---:|---|---:|",
    ]
    for m in report["measurements"]:
        c, f = m["claim_ms"], m["finish_ms"]
        lines.append(
            f"| {m['mode']} | {m['runner']} | {m['c']} | {m['k']} | {m['jobs_per_s']:.0f}"
            f" | {m['wall_s']:.1f} | {c['p50']:.2f} / {c['p99']:.2f}"
            f" | {f['p50']:.2f} / {f['p99']:.2f}"
            f" | {m['claim_ms_first_tenth_p50']:.2f} / {m['claim_ms_last_tenth_p50']:.2f}"
            f" | {m['idle_claim_ms']['p50']:.2f} | {m['own_cores']:.2f}"
            f" | {m['job_states'].get('done', 0)} / {m['jobs_with_attempts_not_1']}"
            f" | {m['foreign_cores']:.2f} |"
        )
    plans = {plan_summary(m["claim_plan_at_start"]) for m in report["measurements"]}
    lines += [
        "",
        f"Claim plan with K queued (after ANALYZE): {'; '.join(sorted(plans))}.",
        "",
        "Claim latency against table size (C = 1; the first claims of a full queue, then"
        " claims of an empty queue once every job is done):",
        "",
        "| jobs in table | claims timed | claim ms p50 / p99 (all queued) | finish ms p50 / p99"
        " | plan | empty-queue claim ms p50 / p99 (all done) | plan | foreign cores (claims) |",
        "|---:|---:|---|---|---|---|---|---:|",
    ]
    for d in report["depths"]:
        c, f, i = d["claim_ms"], d["finish_ms"], d["idle_claim_all_done_ms"]
        lines.append(
            f"| {d['depth']} | {d['n']} | {c['p50']:.2f} / {c['p99']:.2f}"
            f" | {f['p50']:.2f} / {f['p99']:.2f} | {d['plan_summary']}"
            f" | {i['p50']:.2f} / {i['p99']:.2f} | {d['idle_plan_summary']}"
            f" | {d['foreign_cores']:.2f} |"
        )
    lines += [
        "",
        f"Re-measured as disturbed (> {FOREIGN_LOAD_LIMIT} foreign cores):"
        f" {len(report['discarded_disturbed'])}; kept although disturbed:"
        f" {sum(1 for m in report['measurements'] if m['disturbed'])}."
        f" Shutdown: {report['shutdown']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="K = 200, C = 1 and 2")
    parser.add_argument("--jobs", type=int, default=5000, help="K for the queue-only work")
    parser.add_argument("--commit-jobs", type=int, default=2000, help="K for the commit work")
    parser.add_argument("--claimers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument(
        "--depths", type=int, nargs="+", default=[1000, 10_000, 100_000], help="queue depths"
    )
    parser.add_argument("--depth-claims", type=int, default=200, help="claims timed per depth")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--max-quiet-wait", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    args.modes = [("queue", "tasks"), ("queue", "procs"), ("commit", "tasks")]
    if args.quick:
        args.jobs, args.commit_jobs, args.claimers = 200, 100, [1, 2]
        args.depths, args.depth_claims = [1000], 50
        args.retries, args.max_quiet_wait = 0, 5.0
    return run_and_report("queue-throughput", args, run, markdown)


if __name__ == "__main__":
    sys.exit(main())
