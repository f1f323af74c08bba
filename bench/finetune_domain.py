"""Fine-tuning the deployed Whisper model on a domain it gets wrong (issue 15).

The domain: sentences full of made-up product and people names (no model can know
them), spoken by espeak-ng. The base model (the bundled multilingual ``base`` unless
``--base-model`` says otherwise) is fine-tuned on a train split with
``ai2text-train whisper``'s own code on this machine's CPU, then base and candidate
are scored by faster-whisper, as the workers run them, on held-out sentences of the
same domain (new sentences, the same names) and on the canary set shipped with the
trainer. Targets: held-out WER down by at least 30 % relative, canary WER no worse
than 10 % relative.

    .venv/bin/python bench/finetune_domain.py                 # synthesise, train, report
    .venv/bin/python bench/finetune_domain.py --make DIR      # only write the data set
    .venv/bin/python bench/finetune_domain.py --data DIR      # use DIR/{train,dev,test}/*.wav+.txt

``--data`` takes any directory laid out that way (a ``NAME.txt`` with the text beside
each ``NAME.wav``; ``dev/`` is optional), so the script runs on real recordings too.
Results go to stdout as JSON and to ``bench/results/finetune_domain-*.json``. The
machine may be shared: the CPU other processes used during the run is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.sysload import CpuWindow  # noqa: E402

RESULTS = REPO / "bench" / "results"

PRODUCTS = ["Zorblax", "Quintavo", "Fennimax", "Drovanta", "Kelptrix", "Vorlanix", "Sprindle"]
PEOPLE = [
    "Ysolde Prannick",
    "Tobiah Kvarsen",
    "Mireth Oolan",
    "Dace Wendrofield",
    "Anouk Brevaszi",
    "Lorcan Tillimay",
]
TEMPLATES = [
    "{p1} shipped the new {x1} build to {p2} this morning.",
    "Please ask {p1} whether {x1} works with {x2}.",
    "The {x1} dashboard crashed again, so {p1} called {p2}.",
    "{p1} thinks {x1} is faster than {x2} on small servers.",
    "Tomorrow {p1} and {p2} will demo {x1} to the board.",
    "Our customers moved from {x1} to {x2} last quarter.",
    "{p1} wrote the migration guide for {x1}.",
    "Send the {x1} invoice to {p1} before Friday.",
    "{p2} found a memory leak in {x1} and {x2}.",
    "Did {p1} renew the {x1} licence for {p2}?",
]
HELD_OUT_TEMPLATES = [
    "{p1} says the {x1} release notes mention {x2}.",
    "After lunch {p2} will review the {x1} pull request from {p1}.",
    "Nobody told {p1} that {x1} replaced {x2} in March.",
    "Could {p2} compare the {x1} benchmark with {x2} for {p1}?",
    "The {x1} team hired {p1} to support {x2} customers.",
]
VOICES = [("en-us", 150, 50), ("en-us", 165, 40), ("en-gb", 145, 55), ("en-gb-x-rp", 160, 45)]


def sentences(templates: list[str], count: int, rng: random.Random) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        p1, p2 = rng.sample(PEOPLE, 2)
        x1, x2 = rng.sample(PRODUCTS, 2)
        text = rng.choice(templates).format(p1=p1, p2=p2, x1=x1, x2=x2)
        if text not in out:
            out.append(text)
    return out


def synthesise(root: Path, *, train: int, dev: int, test: int, seed: int) -> Path:
    """Write ``root/{train,dev,test}/NNN.wav`` + ``.txt`` (16 kHz mono) with espeak-ng."""
    rng = random.Random(seed)
    seen = sentences(TEMPLATES, train + dev, rng)
    # Held out: sentences of the same names the model never heard in training
    # (sentence shapes of their own), so the test is on the names, not memorised lines.
    unseen = sentences(HELD_OUT_TEMPLATES, test, rng)
    splits = {"train": seen[:train], "dev": seen[train:], "test": unseen}
    for split, texts in splits.items():
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(texts):
            voice, speed, pitch = VOICES[rng.randrange(len(VOICES))]
            raw = folder / f"{i:03d}.raw.wav"
            wav = folder / f"{i:03d}.wav"
            cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", raw, text]
            subprocess.run(cmd, check=True)
            subprocess.run(["sox", raw, "-r", "16000", "-c", "1", wav], check=True)
            raw.unlink()
            (folder / f"{i:03d}.txt").write_text(text + "\n", encoding="utf-8")
    return root


def wav_seconds(path: Path) -> float:
    out = subprocess.run(["soxi", "-D", path], check=True, capture_output=True, text=True)
    return float(out.stdout)


def write_manifest(folder: Path, out: Path) -> Path | None:
    if not folder.is_dir():
        return None
    with out.open("w", encoding="utf-8") as f:
        for wav in sorted(folder.glob("*.wav")):
            text = wav.with_suffix(".txt").read_text(encoding="utf-8").strip()
            line = {
                "audio_filepath": str(wav.resolve()),
                "offset": 0.0,
                "duration": round(wav_seconds(wav), 3),
                "text": text,
                "lang": "en",
                "audio_id": wav.stem,
            }
            f.write(json.dumps(line) + "\n")
    return out


def run(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.logs import configure_logging
    from workers.trainer.whisper.evaluate import EvalSettings
    from workers.trainer.whisper.run import RunConfig
    from workers.trainer.whisper.run import run as run_trainer
    from workers.trainer.whisper.train import FitConfig

    configure_logging(fmt="console", level="info")
    work = Path(tempfile.mkdtemp(prefix="ai2text-finetune-"))
    manifests = {s: write_manifest(data / s, work / f"{s}.jsonl") for s in ("train", "dev", "test")}
    if manifests["train"] is None or manifests["test"] is None:
        raise SystemExit(f"{data} needs train/ and test/ folders of wav+txt pairs")
    out = Path(args.out) if args.out else work / "run"
    config = RunConfig(
        train_manifest=str(manifests["train"]),
        dev_manifest=str(manifests["dev"]) if manifests["dev"] else None,
        test_manifest=str(manifests["test"]),
        base_model=args.base_model,
        out=out,
        fit=FitConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            freeze_encoder=args.freeze_encoder,
            freeze_embeddings=args.freeze_embeddings,
            train_layers=args.train_layers,
            anchor_weight=args.anchor_weight,
            seed=args.seed,
        ),
        device="cpu",
        eval=EvalSettings(device="cpu"),
    )
    window = CpuWindow(lambda: [os.getpid()]).start()
    started = time.perf_counter()
    metrics = run_trainer(config)
    wall = time.perf_counter() - started
    load = window.stop()
    before, after = metrics["wer"]["current"], metrics["wer"]["candidate"]

    def relative(split: str) -> float | None:
        if not before[split] or after[split] is None:
            return None
        return round((after[split] - before[split]) / before[split], 3)

    return {
        "bench": "finetune_domain",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_model": args.base_model,
        "data": str(data),
        "settings": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "freeze_encoder": args.freeze_encoder,
            "freeze_embeddings": args.freeze_embeddings,
            "train_layers": args.train_layers,
            "anchor_weight": args.anchor_weight,
        },
        "utterances": metrics["utterances"],
        "wer_before": before,
        "wer_after": after,
        "relative_change": {s: relative(s) for s in ("dev", "test", "canary")},
        "canary_by_language": {
            "before": metrics["wer_by_language"]["current"]["canary"],
            "after": metrics["wer_by_language"]["candidate"]["canary"],
        },
        "held_out_samples": metrics["samples"]["candidate"]["test"],
        "train_seconds": metrics["train_seconds"],
        "run_seconds": round(wall, 1),
        "model_bytes": metrics["model_bytes"],
        "cpu": {"cores": os.cpu_count(), **load},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "run_dir": str(out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="DIR/{train,dev,test}/*.wav+.txt to use")
    parser.add_argument("--make", type=Path, help="only synthesise the data set into DIR")
    parser.add_argument("--base-model", default="base")
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--dev", type=int, default=8)
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--freeze-encoder", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--freeze-embeddings", action="store_true")
    parser.add_argument("--train-layers", default="all", help="all, decoder, decoder-top-N")
    parser.add_argument("--anchor-weight", type=float, default=10.0, help="L2-SP weight (0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="run directory to keep (default: a temporary one)")
    args = parser.parse_args()
    sizes = {"train": args.train, "dev": args.dev, "test": args.test}
    if args.make:
        synthesise(args.make, seed=args.seed, **sizes)
        print(f"wrote {args.make}")
        return
    data = args.data or synthesise(
        Path(tempfile.mkdtemp(prefix="ai2text-domain-")), seed=args.seed, **sizes
    )
    result = run(data, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"finetune_domain-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
