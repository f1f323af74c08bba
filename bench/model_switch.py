"""From "threshold crossed" to "workers on the new model", through a running ``ai2text up``.

Issue 15 asks for the time from a training threshold crossing to workers running the
model it produced. Training time is ``bench/finetune_domain.py``'s figure; this one
measures everything around it in the running pipeline: the freeze, the launch, the
trainer's model uploaded to object storage and registered, the gate (auto-promotion),
the NOTIFY, the worker fetching the model into its cache (each file checked), loading
it between jobs, and the first file transcribed by it.

The trainer is a stand-in that returns at once with a model directory (links to
``--new``, default the bundled multilingual ``base``; the workers start on ``--old``,
default ``tiny.en``) and metrics that pass the gate, so the figures are the pipeline's
own. Times come from the process's JSON log events.

    .venv/bin/python bench/model_switch.py
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    RESULTS,
    UpProcess,
    event_epoch,
    log,
    machine_info,
    run_and_report,
    steps_after,
    training_up_env,
    utc_now_text,
)
from pipeline.models import resolve_model  # noqa: E402

DATA = REPO / "tests" / "data"
CROSSING = ("jfk.flac", "hotwords.mp3")
# Just below the two files' 11 s + 4 s.
THRESHOLD_HOURS = (11 + 4) / 3600 - 0.0005
TRAINER = (
    "import json, os, sys\n"
    "run, source = sys.argv[1], sys.argv[2]\n"
    "os.makedirs(os.path.join(run, 'model'))\n"
    "for name in os.listdir(source):\n"
    "    if not name.startswith('.'):\n"
    "        os.symlink(os.path.join(source, name), os.path.join(run, 'model', name))\n"
    "wer = dict(current=dict(test=0.4, canary=0.1), candidate=dict(test=0.2, canary=0.1))\n"
    "open(os.path.join(run, 'metrics.json'), 'w').write(json.dumps(dict(wer=wer)))\n"
)
# The events, in order, whose times the report gives (relative to the crossing).
STEPS = (
    ("training threshold crossed", "threshold crossed (orchestrator)"),
    ("training command started", "trainer started (dataset frozen)"),
    ("training run finished", "run finished (stand-in trainer)"),
    ("candidate registered", "model uploaded and registered"),
    ("promotion decided", "gate passed, promoted (NOTIFY)"),
    ("model fetched", "worker fetched and checked it"),
    ("switched model", "worker loaded it: workers on the new model"),
)


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="ai2text-model-switch-"))
    inbox = root / "inbox"
    inbox.mkdir()
    new_dir = args.new or resolve_model("base")
    command = [sys.executable, "-c", TRAINER, "{run_dir}", new_dir]
    env = training_up_env(
        root,
        inbox,
        model=args.old,
        threshold_hours=THRESHOLD_HOURS,
        command=command,
        AI2TEXT_GATEWAY__ENABLED="false",
        AI2TEXT_ASR__CONCURRENCY="1",
        AI2TEXT_TRAINING__CHECK_INTERVAL_S="1",
    )
    up = UpProcess(env, root)
    try:
        up.wait_event("worker ready", 300)
        log(f"up is ready; dropping {', '.join(CROSSING)}")
        for name in CROSSING:
            shutil.copy(DATA / name, inbox / name)
        switched = up.wait_event("switched model", 600)
        log("workers switched; transcribing one more file on the new model")
        shutil.copy(DATA / "speech_de.flac", inbox / "after-switch.flac")
        after = up.wait(
            "after-switch.flac transcribed",
            lambda: next(
                (e for e in up.events("transcribed") if e.get("file") == "after-switch.flac"),
                None,
            ),
            300,
        )
    finally:
        code = up.stop()
    crossing = up.events("training threshold crossed")[0]
    crossed = event_epoch(crossing)
    steps = steps_after(up.log_path, crossing, STEPS)
    report = {
        "when": utc_now_text(),
        "machine": machine_info(),
        "old_model": args.old,
        "new_model_dir": str(new_dir),
        "new_model_bytes": sum(p.stat().st_size for p in Path(new_dir).iterdir() if p.is_file()),
        "steps": steps,
        "crossing_to_workers_on_new_model_s": round(event_epoch(switched) - crossed, 2),
        "first_file_on_new_model": {
            "model": after.get("model"),
            "language": after.get("language"),
            "done_after_crossing_s": round(event_epoch(after) - crossed, 2),
            "processing_s": after.get("processing_s"),
        },
        "up_exit": code,
    }
    shutil.rmtree(root, ignore_errors=True)
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Threshold crossed → workers on the new model",
        "",
        f"{report['when']}; {report['machine']['nproc']} cores, {report['machine']['cpu_model']};"
        f" workers start on {report['old_model']}, the run's model is"
        f" {report['new_model_bytes'] / 2**20:.0f} MiB (stand-in trainer: training time excluded).",
        "",
        "| step | seconds after the crossing |",
        "| --- | ---: |",
    ]
    lines += [f"| {s['step']} | {s['after_crossing_s']:.2f} |" for s in report["steps"]]
    first = report["first_file_on_new_model"]
    total = report["crossing_to_workers_on_new_model_s"]
    lines += [
        "",
        f"Crossing to workers on the new model: **{total:.2f} s** (plus the training time).",
        f"First file on it ({first['model']}, language {first['language']}): done"
        f" {first['done_after_crossing_s']:.2f} s after the crossing.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", default="tiny.en", help="the model workers start on")
    parser.add_argument("--new", help="the run's model directory (default: bundled base)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    return run_and_report("model_switch", args, run, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
