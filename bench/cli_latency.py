#!/usr/bin/env python
"""CLI latency (issue 14): how long ``ai2text --help``, ``ls``, ``status`` and ``show ID``
take, each in a cold process, against a running ``ai2text up``.

The script starts one ``ai2text up`` in a fresh temp data dir (embedded PostgreSQL, the
model of ``--model``, default tiny.en: the model plays no part in a query), drops one
recording and waits for its transcript, so ``show`` has one to print. Then it runs each
command ``--runs`` times, round-robin (a slow drift of the machine hits every command
alike), as a user would: the ``ai2text`` console script in a new process, stdout to
/dev/null, timed from spawn to exit. It reports the median, min and max wall time per
command against the targets (``--help`` 0.3 s, the queries 0.5 s). Each command also
runs without the packages only the development tools bring (rich, which structlog
imports whenever it is installed), as after a plain ``pip install ai2text``.

Foreign load: for every run the machine's busy CPU (``/proc/stat``) minus that of the
command, ``up`` and its PostgreSQL is recorded in cores; a run with more than
``--disturbed`` foreign cores is marked disturbed and left out of the median (the JSON
keeps it). Before the first run the script waits up to ``--max-quiet-wait`` seconds for a
1-minute load average under ``--quiet-load``.

    .venv/bin/python bench/cli_latency.py              # 15 runs of each command
    .venv/bin/python bench/cli_latency.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import resource
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
    RESULTS,
    git,
    log,
    machine_info,
    median,
    run_and_report,
    utc_now_text,
)
from bench.run_bench import Up  # noqa: E402
from bench.sysload import CpuWindow  # noqa: E402

DATA = REPO / "tests" / "data"
TARGETS_S = {"--help": 0.3, "--version": 0.3, "ls": 0.5, "status": 0.5, "show": 0.5}
# Installed only with the development tools (import-linter needs rich), yet structlog
# imports rich whenever it is there: ~40 ms of every command in the dev venv.
DEV_ONLY = ("rich",)
_HIDE_DEV_ONLY = "import sys\nfor name in {names!r}:\n    sys.modules[name] = None\n"


def without_dev_only(env: dict[str, str], where: Path) -> dict[str, str]:
    """``env`` for a process that cannot import ``DEV_ONLY``, as in ``pip install ai2text``."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "sitecustomize.py").write_text(_HIDE_DEV_ONLY.format(names=DEV_ONLY))
    path = [str(where), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(path)}


@dataclass
class FastUp(Up):
    """``ai2text up`` with a small model: only the database matters to a query."""

    model: str = "tiny.en"

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "AI2TEXT_ASR__MODEL": self.model}


def ai2text_command() -> list[str]:
    """The console script next to this interpreter, as a user runs it (else ``-m``)."""
    script = Path(sys.executable).parent / "ai2text"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ai2text"]


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_quiet_load(limit: float, max_wait_s: float) -> float:
    """Poll the 1-minute load average until it is under ``limit``; the last reading."""
    deadline = time.monotonic() + max_wait_s
    load = loadavg()
    while load >= limit and time.monotonic() < deadline:
        time.sleep(5)  # the load average itself moves on a 5-s tick
        load = loadavg()
    return load


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_once(command: list[str], env: dict[str, str], up: Up) -> dict[str, Any]:
    cpu_before = children_cpu_s()
    window = CpuWindow(lambda: [os.getpid(), *up.pids()]).start()
    began = time.perf_counter()
    done = subprocess.run(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    wall = time.perf_counter() - began
    load = window.stop()
    child_cpu = children_cpu_s() - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr!r}")
    foreign = max(0.0, load["foreign_cores"] - child_cpu / wall)
    return {"wall_s": round(wall, 4), "cpu_s": round(child_cpu, 4), "foreign_cores": foreign}


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ai2text-cli-latency-"))
    up = FastUp(work / "up", 1.0, model=args.model)
    up.inbox.mkdir(parents=True)
    report: dict[str, Any] = {
        "when": utc_now_text(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "machine": machine_info(),
        "config": {"runs": args.runs, "model": args.model, "disturbed_cores": args.disturbed},
    }
    up.start()
    try:
        up.wait_for(lambda e: e.get("event") == "worker ready", timeout=300, what="worker ready")
        up.wait_for(lambda e: e.get("event") == "watching", timeout=300, what="watching")
        shutil.copyfile(DATA / "jfk.flac", up.inbox / ".jfk.flac.part")
        os.rename(up.inbox / ".jfk.flac.part", up.inbox / "jfk.flac")
        up.wait_for(
            lambda e: e.get("file") == "jfk.flac" and e.get("event") == "transcribed",
            timeout=300,
            what="jfk.flac to be transcribed",
        )
        audio_id = str(up.cli_json("ls")[0]["id"])
        commands = {
            "--help": ["--help"],
            "--version": ["--version"],
            "ls": ["ls"],
            "status": ["status"],
            "show": ["show", audio_id[:8]],
        }
        report["load_before"] = wait_for_quiet_load(args.quiet_load, args.max_quiet_wait)
        log(f"1-minute load {report['load_before']}; timing {args.runs} runs of each command")
        base = ai2text_command()
        envs = {"": up.env, " (no dev-only packages)": without_dev_only(up.env, work / "site")}
        runs: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.runs):
            for name, argv in commands.items():
                for variant, env in envs.items():
                    runs.setdefault(name + variant, []).append(time_once([*base, *argv], env, up))
        report["load_after"] = loadavg()
        report["runs"] = runs
        report["summary"] = {name: summarise(rs, args.disturbed) for name, rs in runs.items()}
    finally:
        report["up_stop"] = up.stop()
        if not args.keep_temp:
            shutil.rmtree(work, ignore_errors=True)
    return report


def summarise(runs: list[dict[str, Any]], disturbed: float) -> dict[str, Any]:
    quiet = [r for r in runs if r["foreign_cores"] <= disturbed]
    kept = quiet if len(quiet) * 2 >= len(runs) else runs  # too few quiet runs: all, said so
    walls = [r["wall_s"] for r in kept]
    return {
        "median_s": round(median(walls), 3),
        "min_s": round(min(walls), 3),
        "max_s": round(max(walls), 3),
        "cpu_median_s": round(median([r["cpu_s"] for r in kept]), 3),
        "runs": len(kept),
        "disturbed_left_out": len(runs) - len(kept),
        "all_runs_kept_despite_load": kept is runs and len(quiet) < len(runs),
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"CLI latency, {report['when']}, commit {report['commit']}"
        + (" (+ uncommitted changes)" if report["dirty"] else ""),
        f"machine: {m.get('cpu_model', '?')}, {m.get('nproc', '?')} cores;"
        f" 1-minute load {report['load_before']} before, {report['load_after']} after;"
        f" `ai2text up` running (model {report['config']['model']})",
        "",
        "| command | median | min | max | CPU (median) | target | runs (disturbed left out) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in report["summary"].items():
        command, _, variant = name.partition(" ")
        target = TARGETS_S[command]
        verdict = "met" if s["median_s"] <= target else "MISSED"
        label = "show ID" if command == "show" else command
        lines.append(
            f"| `ai2text {label}` {variant} | {s['median_s']:.3f} s | {s['min_s']:.3f} s"
            f" | {s['max_s']:.3f} s | {s['cpu_median_s']:.3f} s | ≤ {target} s ({verdict})"
            f" | {s['runs']} ({s['disturbed_left_out']})"
            + (" all kept: machine busy" if s["all_runs_kept_despite_load"] else "")
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="cold runs per command")
    parser.add_argument("--model", default="tiny.en", help="the model `up` loads")
    parser.add_argument("--quiet-load", type=float, default=0.7)
    parser.add_argument("--max-quiet-wait", type=float, default=600.0)
    parser.add_argument("--disturbed", type=float, default=0.3, help="foreign cores")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep-temp", action="store_true")
    return run_and_report("cli-latency", parser.parse_args(), run, markdown)


if __name__ == "__main__":
    sys.exit(main())
