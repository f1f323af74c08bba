#!/usr/bin/env python
"""The whole loop of issue 15 through one running ``ai2text up``.

Ingest, correct, freeze, train, evaluate, promote, re-transcribe: the domain set of
``bench/finetune_domain.py`` (espeak-ng sentences full of made-up product and people
names) goes through the pipeline as a user would run it:

1. ``ai2text up`` (embedded PostgreSQL, the bundled multilingual ``base``, gateway on
   loopback) with training on: ``dataset.labels = verified`` (only what a person
   corrected is training data), ``training.threshold_hours`` just below the corrected
   audio, ``training.auto_promote``, and ``ai2text-train whisper`` as the command;
2. every sentence, labelled and held-out, is dropped into the inbox and transcribed by
   ``base``: the held-out transcripts are the "before" figure;
3. the labelled sentences are corrected through ``PUT /v1/audio/{id}/transcript`` with
   their known texts and language (each a verified revision); the last one crosses the
   threshold;
4. the orchestrator freezes a dataset version (its own train/dev/test split), runs the
   trainer, registers the candidate, and the gate promotes it; the workers switch;
5. the held-out sentences are sent again through ``POST /v1/audio/transcriptions``
   (``whisper-1``: the workers' model, now the fine-tuned one): the "after" figure.

Reported: held-out WER before and after (normalised as the trainer scores), the canary
WER before and after (from the registry), training time, model size, and the time from
"threshold crossed" to "workers on the new model" with each step between. Times come
from the process's JSON log events; the CPU other processes took is measured.

    .venv/bin/python bench/closed_loop.py                  # 48 + 8 labelled, 20 held-out
    .venv/bin/python bench/closed_loop.py --data DIR       # DIR/{train,dev,test}/*.wav+.txt
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

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
from bench.finetune_domain import synthesise, wav_seconds  # noqa: E402
from bench.sysload import CpuWindow  # noqa: E402
from workers.trainer.whisper.evaluate import normalise  # noqa: E402

# The events whose times the report gives, relative to the crossing.
STEPS = (
    ("training threshold crossed", "threshold crossed (orchestrator)"),
    ("training command started", "dataset frozen, trainer started"),
    ("training run finished", "trainer finished (train + evaluate + export)"),
    ("candidate registered", "model uploaded and registered"),
    ("promotion decided", "gate decided"),
    ("model fetched", "worker fetched and checked it"),
    ("switched model", "worker loaded it: workers on the new model"),
)
SCOPES = (
    "audio:read",
    "audio:write",
    "transcripts:read",
    "transcripts:write",
    "training:read",
    "admin",
)


def mint_token(env: dict[str, str]) -> str:
    """A token for the bench's calls, from ``ai2text token`` with ``up``'s settings."""
    args = [sys.executable, "-m", "ai2text", "token", "--sub", "bench-editor", "--ttl", "86400"]
    for scope in SCOPES:
        args += ["--scope", scope]
    done = subprocess.run(  # noqa: S603 - our own CLI
        args, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def wer(pairs: list[tuple[str, str]]) -> float:
    import jiwer

    refs = [normalise(r) for r, _ in pairs]
    hyps = [normalise(h) for _, h in pairs]
    return round(float(jiwer.wer(refs, hyps)), 4)


def texts_of(folder: Path) -> dict[str, str]:
    return {
        wav.stem: wav.with_suffix(".txt").read_text(encoding="utf-8").strip()
        for wav in sorted(folder.glob("*.wav"))
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="ai2text-closed-loop-"))
    data = args.data or synthesise(
        root / "domain", train=args.train, dev=args.dev, test=args.test, seed=args.seed
    )
    inbox = root / "inbox"
    inbox.mkdir()
    # Labelled: what a person will correct (the pipeline makes its own split of it).
    labelled: dict[str, tuple[Path, str]] = {}
    for split in ("train", "dev"):
        for stem, text in texts_of(data / split).items():
            labelled[f"labelled-{split}-{stem}.wav"] = (data / split / f"{stem}.wav", text)
    held_out = {
        f"held-out-{stem}.wav": (data / "test" / f"{stem}.wav", text)
        for stem, text in texts_of(data / "test").items()
    }
    labelled_s = sum(wav_seconds(path) for path, _ in labelled.values())
    # Crossed by the last correction, not before (a few seconds of slack for rounding).
    threshold_hours = (labelled_s - 2.0) / 3600
    trainer = [
        # As the README configures it; the entry point beside this interpreter.
        str(Path(sys.executable).parent / "ai2text-train"),
        "whisper",
        "--train-manifest",
        "{train_manifest}",
        "--dev-manifest",
        "{dev_manifest}",
        "--test-manifest",
        "{test_manifest}",
        "--base-model",
        "{base_model_dir}",
        "--freeze-encoder",
        "--steps",
        str(args.steps),
        "--out",
        "{run_dir}",
    ]
    env = training_up_env(
        root,
        inbox,
        model=args.model,
        threshold_hours=threshold_hours,
        command=trainer,
        AI2TEXT_GATEWAY__HOST="127.0.0.1",
        AI2TEXT_GATEWAY__PORT="0",
        AI2TEXT_DATASET__LABELS="verified",
        AI2TEXT_DATASET__TRAIN_RATIO=str(args.train_ratio),
        AI2TEXT_DATASET__DEV_RATIO=str(args.dev_ratio),
        AI2TEXT_TRAINING__CHECK_INTERVAL_S="2",
    )
    load_before = os.getloadavg()[0]
    window = CpuWindow(lambda: []).start()
    up = UpProcess(env, root)
    report: dict[str, Any]
    try:
        url = up.wait_event("gateway listening", 300)["url"]
        up.wait_event("worker ready", 300)
        headers = {"Authorization": f"Bearer {mint_token(env)}"}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            report = loop(args, up, client, inbox, labelled, held_out, labelled_s)
    finally:
        code = up.stop()
        load = window.stop()
    report.update(
        when=utc_now_text(),
        machine=machine_info(),
        model=args.model,
        threshold_hours=round(threshold_hours, 5),
        up_exit=code,
        cpu=load,
        load_before=round(load_before, 2),
        log=str(up.log_path),
    )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return report


def loop(
    args: argparse.Namespace,
    up: UpProcess,
    client: httpx.Client,
    inbox: Path,
    labelled: dict[str, tuple[Path, str]],
    held_out: dict[str, tuple[Path, str]],
    labelled_s: float,
) -> dict[str, Any]:
    every = {**labelled, **held_out}
    log(f"up is ready; dropping {len(labelled)} labelled + {len(held_out)} held-out files")
    for name, (path, _) in every.items():
        shutil.copy(path, inbox / f".{name}.part")
        os.replace(inbox / f".{name}.part", inbox / name)

    first_pass_started = time.monotonic()

    def transcribed() -> dict[str, str] | None:
        # Per-file "ingested" lines are at debug level; "transcribed" names file and id.
        found = {
            e["file"]: e["audio_id"] for e in up.events("transcribed") if e.get("file") in every
        }
        return found if len(found) == len(every) else None

    audio_ids: dict[str, str] = up.wait("first pass transcribed", transcribed, args.timeout)
    first_pass_s = time.monotonic() - first_pass_started
    log(f"first pass done in {first_pass_s:.0f} s; held-out WER before")
    before = {name: transcript_text(client, audio_ids[name]) for name in held_out}
    wer_before = wer([(held_out[n][1], before[n]) for n in held_out])
    wer_labelled_before = wer(
        [(labelled[n][1], transcript_text(client, audio_ids[n])) for n in labelled]
    )

    log(f"correcting {len(labelled)} transcripts through the API")
    corrected_started = time.monotonic()
    for name, (path, text) in labelled.items():
        # The sentences are English, whatever the model guessed (base hears some as Thai).
        end = round(wav_seconds(path), 3)
        body = {"language": "en", "segments": [{"start": 0.0, "end": end, "text": text}]}
        answer = client.put(f"/v1/audio/{audio_ids[name]}/transcript", json=body)
        if answer.status_code != 200:
            raise RuntimeError(f"correcting {name}: {answer.status_code} {answer.text}")
    corrections_s = time.monotonic() - corrected_started

    crossed = up.wait_event("training threshold crossed", 120)
    log("threshold crossed; training")
    finished = up.wait_event("training run finished", args.timeout)
    if finished.get("state") != "succeeded":
        raise RuntimeError(f"the training run failed: {finished.get('error')}; see {up.log_path}")
    decided = up.wait_event("promotion decided", 300)
    if not decided.get("promoted"):
        raise RuntimeError(f"the gate refused the candidate: {decided.get('why')}")
    switched = up.wait_event("switched model", 300)
    promoted_id = switched.get("model_id")
    log(f"workers on {switched.get('model')}; re-transcribing the held-out files")

    after: dict[str, str] = {}
    after_models: set[str] = set()
    for name, (path, _) in held_out.items():
        with path.open("rb") as f:
            answer = client.post(
                "/v1/audio/transcriptions",
                data={"model": "whisper-1", "response_format": "verbose_json"},
                files={"file": (name, f, "audio/wav")},
            )
        if answer.status_code != 200:
            raise RuntimeError(f"re-transcribing {name}: {answer.status_code} {answer.text}")
        after[name] = answer.json()["text"]
    for event in up.events("transcribed"):
        if event.get("file") in held_out and event_epoch(event) > event_epoch(switched):
            after_models.add(str(event.get("model_id") or event.get("model")))
    wer_after = wer([(held_out[n][1], after[n]) for n in held_out])

    registry = client.get("/v1/models/registry").json()
    record = next((m for m in registry["items"] if m["id"] == promoted_id), None)
    steps = steps_after(up.log_path, crossed, STEPS)
    start = event_epoch(crossed)
    return {
        "labelled_files": len(labelled),
        "labelled_audio_s": round(labelled_s, 1),
        "held_out_files": len(held_out),
        "first_pass_s": round(first_pass_s, 1),
        "corrections_s": round(corrections_s, 2),
        "wer_held_out": {
            "before": wer_before,
            "after": wer_after,
            "relative_change": round((wer_after - wer_before) / wer_before, 3)
            if wer_before
            else None,
        },
        "wer_labelled_before_correction": wer_labelled_before,
        "held_out_after_models": sorted(after_models),
        "promoted": {
            "model": switched.get("model"),
            "model_id": promoted_id,
            "why": decided.get("why"),
        },
        "registry_record": record,
        "run_finished_event": finished,
        "steps": steps,
        "crossing_to_workers_on_new_model_s": round(event_epoch(switched) - start, 2),
        "samples": [
            {"reference": held_out[n][1], "before": before[n], "after": after[n]}
            for n in list(held_out)[:5]
        ],
    }


def transcript_text(client: httpx.Client, audio_id: str) -> str:
    answer = client.get(f"/v1/audio/{audio_id}/transcript", params={"format": "json"})
    answer.raise_for_status()
    document = answer.json()
    return str(document.get("text") or " ".join(s["text"] for s in document.get("segments", [])))


def markdown(report: dict[str, Any]) -> str:
    held = report["wer_held_out"]
    metrics = (report.get("registry_record") or {}).get("metrics") or {}
    wer = metrics.get("wer", {})
    before, after = wer.get("current", {}), wer.get("candidate", {})

    def change(split: str) -> str:
        old, new = before.get(split), after.get(split)
        if not old or new is None:
            return "—"
        return f"{old} → {new} ({(new - old) / old:+.0%})"

    by_language = metrics.get("wer_by_language", {})
    canary_before = by_language.get("current", {}).get("canary", {})
    canary_after = by_language.get("candidate", {}).get("canary", {})
    lines = [
        "# The loop through one running `ai2text up` (issue 15)",
        "",
        f"{report['when']}; {report['machine']['nproc']} cores, {report['machine']['cpu_model']};"
        f" workers start on {report['model']}; {report['labelled_files']} labelled files"
        f" ({report['labelled_audio_s']} s of audio) corrected, {report['held_out_files']}"
        f" held out; machine CPU while it ran (ours included):"
        f" {report['cpu']['machine_busy_cores']} of {report['machine']['nproc']} cores busy,"
        f" 1-min load before the start {report['load_before']}.",
        "",
        "| figure | before → after |",
        "| --- | --- |",
        "| held-out WER (never corrected: the first pass, then sent again after the switch)"
        f" | **{held['before']} →"
        f" {held['after']} ({held['relative_change']:+.0%})** |",
        f"| the version's test split (scored by the trainer) | {change('test')} |",
        f"| the version's dev split | {change('dev')} |",
        f"| canary set | **{change('canary')}** |",
        f"| canary per language | {json.dumps(canary_before)} → {json.dumps(canary_after)} |",
        f"| labelled sentences as first transcribed | WER"
        f" {report['wer_labelled_before_correction']} |",
        "",
        f"- Utterances per split: {json.dumps(metrics.get('utterances'))}; training"
        f" {metrics.get('train_seconds')} s; model {metrics.get('model_bytes')} bytes.",
        f"- Gate: {report['promoted']['why']}; held-out files after the switch transcribed by"
        f" {report['held_out_after_models']}.",
        f"- First pass (all files transcribed by {report['model']}) {report['first_pass_s']} s;"
        f" {report['labelled_files']} corrections through the API {report['corrections_s']} s.",
        "",
        "| step | seconds after the crossing |",
        "| --- | ---: |",
    ]
    lines += [f"| {s['step']} | {s['after_crossing_s']:.1f} |" for s in report["steps"]]
    total = report["crossing_to_workers_on_new_model_s"]
    lines += [
        "",
        f"Threshold crossed → workers on the new model: **{total:.1f} s** (training included).",
        "",
        "Held-out samples (reference / before / after):",
        "",
    ]
    for sample in report["samples"]:
        lines += [
            f"- {sample['reference']}",
            f"  - before: {sample['before']}",
            f"  - after: {sample['after']}",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="DIR/{train,dev,test}/*.wav+.txt to use")
    parser.add_argument("--model", default="base", help="asr.model the workers start on")
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--dev", type=int, default=8)
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--train-ratio", type=float, default=0.7)
    parser.add_argument("--dev-ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600, help="per long step, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    return run_and_report("closed_loop", args, run, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
