#!/usr/bin/env python
"""Gateway auth cost: ``GET /v1/audio/{id}`` with RS256 JWT verification against the
same route with the auth dependency overridden, in the same run.

Run from the repository root:

    .venv/bin/python bench/gateway_auth.py            # 5 rounds x 10 s per side
    .venv/bin/python bench/gateway_auth.py --quick    # 1 round x 2 s per side

One server process (pinned to CPU 0 with ``taskset``, as is the PostgreSQL it queries)
serves two instances of the real app (``gateway.app.create_app`` served by
``gateway.app.serve``, i.e. uvicorn) on two ports: one as configured (RS256 keys made
here, ``auth.public_key_file``), one with the route's auth dependency replaced through
``app.dependency_overrides`` by one returning the same ``Principal``. The load generator
(this process, pinned to CPU 1) is an asyncio httpx client with a fixed number of
keep-alive connections, measuring each side for a fixed time after a warm-up, the order
alternating from round to round. A timeit micro-benchmark of the project's
``TokenVerifier.verify`` gives the verification cost on its own.
Results: bench/results/gateway-auth-<stamp>.{json,md}; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
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
    log,
    machine_info,
    percentile,
    run_and_report,
    stop_process,
)
from bench.sysload import CpuWindow  # noqa: E402

# Far above what the load generator can send, so the limiter never answers 429 (it still runs).
RATE_LIMIT_PER_MINUTE = 1_000_000_000
SUBJECT = "bench-client"
SCOPES = ("audio:read",)
SERVER_CPU, CLIENT_CPU = 0, 1


# -- the server process ---------------------------------------------------------------


def bench_settings(cfg: dict[str, Any]) -> Any:
    from pipeline.config import Settings

    return Settings(
        data_dir=Path(cfg["data_dir"]),
        database={"url": cfg["url"]},  # type: ignore[arg-type]
        gateway={"rate_limit_per_minute": RATE_LIMIT_PER_MINUTE},  # type: ignore[arg-type]
        auth={  # type: ignore[arg-type]
            "algorithms": ("RS256",),
            "public_key_file": Path(cfg["public_key"]),
            "private_key_file": Path(cfg["private_key"]),
            "dev_keys": False,
        },
        log_format="json",
    )


def auth_dependency() -> Any:
    """The callable that authenticates ``GET /v1/audio/{audio_id}`` (``require(...)``),
    read from the endpoint's annotation ``Annotated[Principal, Depends(...)]``."""
    import typing

    from fastapi.params import Depends

    from gateway.routes import audio

    hints = typing.get_type_hints(audio.get_audio, include_extras=True)
    for hint in hints.values():
        for meta in getattr(hint, "__metadata__", ()):
            if isinstance(meta, Depends) and "require" in getattr(
                meta.dependency, "__qualname__", ""
            ):
                return meta.dependency
    raise RuntimeError("no auth dependency found on GET /v1/audio/{audio_id}")


async def serve_main(cfg: dict[str, Any]) -> None:
    from ai2text.components import ingestor_of
    from gateway.app import create_app, serve
    from gateway.auth import Principal
    from pipeline.db.database import Database
    from pipeline.logs import configure_logging
    from pipeline.metrics import Metrics
    from pipeline.storage import open_store

    settings = bench_settings(cfg)
    configure_logging(fmt="json", level="info")  # as deployed
    db = Database(settings.database, embedded=None)
    await db.open(run_migrations=False)
    store = open_store(settings.storage, settings.data_dir)
    ingestor = ingestor_of(settings, db, store, Metrics())
    with_auth = create_app(settings, db, store, ingestor)
    without_auth = create_app(settings, db, store, ingestor)
    principal = Principal(subject=SUBJECT, scopes=frozenset(SCOPES), tenant=None)

    async def no_auth() -> Principal:
        return principal

    without_auth.dependency_overrides[auth_dependency()] = no_auth
    # "nodelay": a listening socket made with proto IPPROTO_TCP, so asyncio turns Nagle off
    # on every accepted connection; "project": the project's own bind_socket (see README).
    socks = {
        "auth": _listen(),
        "noauth": _listen(),
        "auth-projsock": _project_socket(),
        "noauth-projsock": _project_socket(),
    }
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ports = {name: s.getsockname()[1] for name, s in socks.items()}
    await asyncio.to_thread(_write_atomically, Path(cfg["ready_file"]), json.dumps(ports))
    try:
        await asyncio.gather(
            *(
                serve(without_auth if name.startswith("noauth") else with_auth, sock, stop)
                for name, sock in socks.items()
            )
        )
    finally:
        await db.close()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _listen() -> socket.socket:
    """Like the project's bind_socket, but with ``proto=IPPROTO_TCP``: asyncio sets
    TCP_NODELAY only on connections of sockets whose proto says TCP."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _project_socket() -> socket.socket:
    try:
        from pipeline.http_serve import bind_socket
    except ImportError:  # older layout
        from gateway.app import bind_socket  # type: ignore[attr-defined,no-redef]
    sock: socket.socket = bind_socket("127.0.0.1", 0)
    return sock


# -- set-up in the bench process --------------------------------------------------------


def make_keys(dest: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = dest / "jwt-private.pem"
    public = dest / "jwt-public.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


async def ingest_one(settings: Any) -> str:
    """One real audio row (jfk.flac through the project's Ingestor); its id."""
    from ai2text.components import ingestor_of
    from pipeline.db.database import Database
    from pipeline.ingest.core import Arrival
    from pipeline.metrics import Metrics
    from pipeline.storage import open_store

    db = Database(settings.database, embedded=None)
    await db.open()
    try:
        store = open_store(settings.storage, settings.data_dir)
        ingestor = ingestor_of(settings, db, store, Metrics())
        path = REPO / "tests" / "data" / "jfk.flac"
        with open(path, "rb") as f:  # noqa: ASYNC230 - set-up, not measured
            result = await ingestor.ingest(
                Arrival("folder", path.name, path.as_uri(), "bench"), f, path.stat().st_size
            )
        return str(result.audio_id)
    finally:
        await db.close()


def micro_verify(settings: Any, token: str, number: int, repeat: int) -> dict[str, Any]:
    """timeit of the project's verifier alone (and of the rate limiter, also on the path)."""
    from gateway.auth import TokenVerifier, parse_bearer
    from gateway.ratelimit import RateLimiter

    verifier = TokenVerifier(settings.auth, settings.data_dir)
    header = f"Bearer {token}"
    limiter = RateLimiter(RATE_LIMIT_PER_MINUTE)
    verify = timeit.repeat(
        lambda: verifier.verify(parse_bearer(header)), number=number, repeat=repeat
    )
    limit = timeit.repeat(lambda: limiter.acquire(SUBJECT), number=number, repeat=repeat)
    return {
        "number": number,
        "repeat": repeat,
        "verify_us_best": round(1e6 * min(verify) / number, 1),
        "verify_us_median": round(1e6 * statistics.median(verify) / number, 1),
        "ratelimit_us_median": round(1e6 * statistics.median(limit) / number, 2),
    }


# -- the load generator -------------------------------------------------------------------


async def load(
    url: str, headers: dict[str, str], connections: int, warmup_s: float, duration_s: float
) -> tuple[list[float], int, float]:
    """``connections`` workers, each sending one request at a time on its own keep-alive
    connection; latencies of the requests started inside the measured window."""
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        t_start = time.perf_counter()
        t_measure = t_start + warmup_s
        t_end = t_measure + duration_s

        async def worker() -> None:
            nonlocal errors
            while True:
                t = time.perf_counter()
                if t >= t_end:
                    return
                r = await client.get(url, headers=headers)
                done = time.perf_counter()
                if t >= t_measure:
                    if r.status_code == 200:
                        latencies.append(done - t)
                    else:
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        measured = time.perf_counter() - t_measure
    return latencies, errors, measured


class Side:
    def __init__(self, name: str, url: str, headers: dict[str, str], args: argparse.Namespace):
        self.name = name
        self.url = url
        self.headers = headers
        self.args = args
        self.server_pid = 0
        self.pg_pids: list[int] = []

    def own_pids(self) -> list[int]:
        return [os.getpid(), self.server_pid, *self.pg_pids]

    def measure(self, attempt: int) -> dict[str, Any]:
        window = CpuWindow(self.own_pids).start()
        cpu0 = {
            "server": cpu_s_of([self.server_pid]),
            "postgres": cpu_s_of(self.pg_pids),
            "client": cpu_s_of([os.getpid()]),
        }
        lat, errors, wall = asyncio.run(
            load(
                self.url,
                self.headers,
                self.args.connections,
                self.args.warmup,
                self.args.duration,
            )
        )
        cpu = window.stop()
        used = {
            "server": cpu_s_of([self.server_pid]) - cpu0["server"],
            "postgres": cpu_s_of(self.pg_pids) - cpu0["postgres"],
            "client": cpu_s_of([os.getpid()]) - cpu0["client"],
        }
        total_wall = wall + self.args.warmup  # the CPU counters include the warm-up
        n = len(lat)
        return {
            "side": self.name,
            "requests": n,
            "errors": errors,
            "wall_s": round(wall, 3),
            "rps": round(n / wall, 1),
            "p50_ms": round(1000 * percentile(lat, 50), 3),
            "p99_ms": round(1000 * percentile(lat, 99), 3),
            "mean_ms": round(1000 * statistics.fmean(lat), 3),
            "cores": {k: round(v / total_wall, 2) for k, v in used.items()},
            "cpu": cpu,
            "foreign_cores": cpu["foreign_cores"],
        }


# -- the run -------------------------------------------------------------------------------


def start_server(cfg_path: Path, pin: bool, log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", str(cfg_path)]
    if pin:
        cmd = ["taskset", "-c", str(SERVER_CPU), *cmd]
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            cmd, env=clean_env(), stdout=out, stderr=subprocess.STDOUT, cwd=REPO
        )


def pin(pids: list[int], cpu: int) -> None:
    for pid in pids:
        try:
            os.sched_setaffinity(pid, {cpu})
        except ProcessLookupError:
            continue


def run(args: argparse.Namespace) -> dict[str, Any]:
    from gateway.keys import mint_token
    from pipeline.logs import configure_logging

    configure_logging(fmt="console", level="warning")
    work = Path(tempfile.mkdtemp(prefix="ai2text-bench-gw-"))
    work.chmod(0o755)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "args": vars(args) | {"out": None},
        "rate_limit_per_minute": RATE_LIMIT_PER_MINUTE,
    }
    pg = PgServer().start()
    server: subprocess.Popen[bytes] | None = None
    guard = Guard(retries=args.retries, max_quiet_wait_s=args.max_quiet_wait)
    try:
        private, public = make_keys(work)
        cfg = {
            "url": pg.create_database("gw"),
            "data_dir": str(work / "data"),
            "public_key": str(public),
            "private_key": str(private),
            "ready_file": str(work / "ready.json"),
        }
        settings = bench_settings(cfg)
        audio_id = asyncio.run(ingest_one(settings))
        cfg_path = work / "server.json"
        cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
        server = start_server(cfg_path, args.pin, work / "server.log")
        ports = _wait_ready(Path(cfg["ready_file"]), server, work / "server.log")
        if args.pin:
            pin(pg.pids(), SERVER_CPU)
            os.sched_setaffinity(0, {CLIENT_CPU})
        report["affinity"] = {
            "client": sorted(os.sched_getaffinity(0)),
            "server": sorted(os.sched_getaffinity(server.pid)),
            "postgres": sorted(os.sched_getaffinity(pg.pids()[0])),
        }
        token = mint_token(
            settings.auth,
            settings.data_dir,
            subject=SUBJECT,
            scopes=list(SCOPES),
            tenant=None,
            ttl_s=7200,
        )
        bearer = {"Authorization": f"Bearer {token}"}
        sides = {
            name: Side(
                name,
                f"http://127.0.0.1:{port}/v1/audio/{audio_id}",
                {} if name.startswith("noauth") else bearer,
                args,
            )
            for name, port in ports.items()
        }
        report["sanity"] = _sanity(sides, audio_id)
        for side in sides.values():
            side.server_pid = server.pid
            side.pg_pids = pg.pids()
        measurements = []
        plan = [("auth", "noauth")] * args.rounds + [
            ("auth-projsock", "noauth-projsock")
        ] * args.projsock_rounds
        for rnd, pair in enumerate(plan):
            order = pair if rnd % 2 == 0 else pair[::-1]
            for name in order:
                if args.pin:
                    pin(pg.pids(), SERVER_CPU)  # backends forked meanwhile
                sides[name].pg_pids = pg.pids()
                m = guard.run(f"r{rnd + 1} {name}", sides[name].measure, sides[name].own_pids)
                m["round"] = rnd + 1
                log(
                    f"r{rnd + 1} {name}: {m['rps']:.0f} req/s, p50 {m['p50_ms']:.2f} ms, p99"
                    f" {m['p99_ms']:.2f} ms, cores {m['cores']}, foreign {m['foreign_cores']:.2f}"
                )
                measurements.append(m)
        report["measurements"] = measurements
        report["micro"] = micro_verify(settings, token, args.micro_number, args.micro_repeat)
    finally:
        if server is not None:
            report["server_exit"] = stop_process(server)
        report["shutdown"] = pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    report["discarded_disturbed"] = guard.discarded
    report["summary"] = summarise(report)
    return report


def _wait_ready(ready: Path, server: subprocess.Popen[bytes], log_path: Path) -> dict[str, int]:
    deadline = time.monotonic() + 60
    while not ready.exists():
        if server.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not get ready")
        time.sleep(0.05)
    ports: dict[str, int] = json.loads(ready.read_text(encoding="utf-8"))
    return ports


def _sanity(sides: dict[str, Side], audio_id: str) -> dict[str, Any]:
    """Both sides answer the same body; the auth side refuses a missing token."""
    import httpx

    auth, noauth = sides["auth"], sides["noauth"]
    with httpx.Client(timeout=10) as client:
        for side in sides.values():
            r = client.get(side.url, headers=side.headers)
            if r.status_code != 200:
                raise RuntimeError(f"{side.name}: {r.status_code} {r.text[:200]}")
    with httpx.Client(timeout=10) as client:
        a = client.get(auth.url, headers=auth.headers)
        b = client.get(noauth.url)
        refused = client.get(auth.url)
    same = a.status_code == b.status_code == 200 and a.json() == b.json()
    if not same or refused.status_code != 401:
        raise RuntimeError(
            f"sanity check failed: auth {a.status_code}, noauth {b.status_code},"
            f" same body {same}, no token on the auth side {refused.status_code}"
        )
    return {
        "auth_status": a.status_code,
        "noauth_status": b.status_code,
        "same_body": same,
        "auth_side_without_token": refused.status_code,
        "audio_id": audio_id,
        "body_bytes": len(a.content),
    }


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("auth", "noauth", "auth-projsock", "noauth-projsock"):
        ms = [m for m in report["measurements"] if m["side"] == name]
        if not ms:
            continue
        out[name] = {
            "rounds": len(ms),
            "rps_median": statistics.median(m["rps"] for m in ms),
            "rps_min": min(m["rps"] for m in ms),
            "rps_max": max(m["rps"] for m in ms),
            "p50_ms_median": statistics.median(m["p50_ms"] for m in ms),
            "p99_ms_median": statistics.median(m["p99_ms"] for m in ms),
            "server_cores_median": statistics.median(m["cores"]["server"] for m in ms),
            "postgres_cores_median": statistics.median(m["cores"]["postgres"] for m in ms),
            "client_cores_median": statistics.median(m["cores"]["client"] for m in ms),
            "server_cpu_ms_per_request": statistics.median(
                1000 * m["cores"]["server"] / m["rps"] for m in ms
            ),
            "errors": sum(m["errors"] for m in ms),
            "max_foreign_cores": max(m["foreign_cores"] for m in ms),
        }
    a, b = out["auth"], out["noauth"]
    out["derived_us_per_request"] = round(1e6 * (1 / a["rps_median"] - 1 / b["rps_median"]), 1)
    out["server_cpu_us_per_request_diff"] = round(
        1000 * (a["server_cpu_ms_per_request"] - b["server_cpu_ms_per_request"]), 1
    )
    return out


def markdown(report: dict[str, Any]) -> str:
    mach, s, micro = report["machine"], report["summary"], report["micro"]
    args = report["args"]
    lines = [
        f"Gateway auth, {mach['started']}, commit {mach['git_commit']}; {mach['nproc']} cores"
        f" ({mach['cpu_model']}), {mach['mem_gib']} GiB; affinity {report['affinity']};"
        f" {args['connections']} keep-alive connections, {args['duration']:.0f} s per side after"
        f" {args['warmup']:.0f} s warm-up, {args['rounds']} rounds alternating;"
        f" rate limit raised to {RATE_LIMIT_PER_MINUTE}/min.",
        "",
        "| side | req/s median (min–max) | p50 ms | p99 ms | server CPU cores | PostgreSQL"
        " cores | client cores | server CPU ms/request | errors | max foreign cores |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("auth", "noauth", "auth-projsock", "noauth-projsock"):
        if name not in s:
            continue
        r = s[name]
        lines.append(
            f"| {name} | {r['rps_median']:.0f} ({r['rps_min']:.0f}–{r['rps_max']:.0f})"
            f" | {r['p50_ms_median']:.2f} | {r['p99_ms_median']:.2f}"
            f" | {r['server_cores_median']:.2f} | {r['postgres_cores_median']:.2f}"
            f" | {r['client_cores_median']:.2f} | {r['server_cpu_ms_per_request']:.3f}"
            f" | {r['errors']} | {r['max_foreign_cores']:.2f} |"
        )
    lines += [
        "",
        f"Derived cost of auth per request, 1/rps_auth − 1/rps_noauth:"
        f" {s['derived_us_per_request']:.0f} µs; difference in server CPU per request:"
        f" {s['server_cpu_us_per_request_diff']:.0f} µs. `TokenVerifier.verify` alone (timeit,"
        f" {micro['number']}×{micro['repeat']}): best {micro['verify_us_best']:.0f} µs, median"
        f" {micro['verify_us_median']:.0f} µs per token; rate limiter"
        f" {micro['ratelimit_us_median']:.2f} µs.",
        "",
        "| round | side | attempt | req/s | p50 ms | p99 ms | server / pg / client cores"
        " | foreign cores |",
        "|---:|---|---:|---:|---:|---:|---|---:|",
    ]
    for m in report["measurements"]:
        c = m["cores"]
        lines.append(
            f"| {m['round']} | {m['side']} | {m['attempt']} | {m['rps']:.0f} | {m['p50_ms']:.2f}"
            f" | {m['p99_ms']:.2f} | {c['server']:.2f} / {c['postgres']:.2f} / {c['client']:.2f}"
            f" | {m['foreign_cores']:.2f} |"
        )
    lines += [
        "",
        f"Sanity: {report['sanity']}. Re-measured as disturbed (> {FOREIGN_LOAD_LIMIT} foreign"
        f" cores): {len(report['discarded_disturbed'])}. Server exit {report.get('server_exit')};"
        f" shutdown {report['shutdown']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s per side")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per side")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each window")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--projsock-rounds",
        type=int,
        default=1,
        help="extra rounds on sockets made by the project's bind_socket (Nagle on)",
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="no taskset pinning")
    parser.add_argument("--micro-number", type=int, default=2000)
    parser.add_argument("--micro-repeat", type=int, default=5)
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--max-quiet-wait", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        asyncio.run(serve_main(json.loads(args.serve.read_text(encoding="utf-8"))))
        return 0
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2.0, 0.5
        args.micro_number, args.micro_repeat = 200, 3
        args.retries, args.max_quiet_wait = 0, 5.0
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        args.pin = False
    return run_and_report("gateway-auth", args, run, markdown)


if __name__ == "__main__":
    sys.exit(main())
