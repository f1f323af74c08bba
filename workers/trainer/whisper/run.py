"""One fine-tuning run: check the input, score the base, train, export, score the candidate.

Everything a person can get wrong (manifests, audio files, languages the base
model lacks) is checked before the first transcription or training step. The
trainable copy is released before the candidate is loaded to be scored.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
import torch

from pipeline.models import ModelError, languages_of, resolve_model
from workers.trainer.manifest import AudioCache, Clip, ManifestError, read_clips
from workers.trainer.train import resolve_device
from workers.trainer.whisper.evaluate import EvalSettings, Scored, Transcriber, score
from workers.trainer.whisper.export import base_quantization, export
from workers.trainer.whisper.mapping import load_trainable
from workers.trainer.whisper.outputs import MODEL_DIR, RunDir
from workers.trainer.whisper.train import FitConfig, examples, fit

log = structlog.get_logger(__name__)

CANARY_MANIFEST = "canary.jsonl"
SPLITS = ("dev", "test", "canary")


@dataclass(frozen=True, slots=True)
class RunConfig:
    train_manifest: str
    dev_manifest: str | None
    test_manifest: str | None
    base_model: str
    out: Path
    canary: Path | None = None
    """A directory holding ``canary.jsonl``; None: the set shipped in the package."""
    fit: FitConfig = FitConfig()
    device: str = "auto"
    quantization: str | None = None
    """CTranslate2 type of the exported weights; None: the base's (float16 when bundled)."""
    eval: EvalSettings = EvalSettings()


def default_canary() -> Path:
    return Path(str(resources.files("workers.trainer") / "canary"))


def base_model_dir(name: str) -> Path:
    """A CTranslate2 directory for ``name`` (a directory, or a bundled model's name)."""
    resolved = Path(resolve_model(name))
    if not resolved.is_dir():
        raise ModelError(f"--base-model {name} is not a local CTranslate2 Whisper directory")
    return resolved


def run(config: RunConfig) -> dict[str, Any]:
    """Do the run; on success ``config.out`` holds ``model/`` and ``metrics.json``."""
    with RunDir(config.out) as run_dir:
        base = base_model_dir(config.base_model)
        device = resolve_device(config.device)
        train_clips = read_clips(config.train_manifest)
        splits = {
            "dev": read_clips(config.dev_manifest) if config.dev_manifest else [],
            "test": read_clips(config.test_manifest) if config.test_manifest else [],
            "canary": _canary(config.canary or default_canary(), base),
        }
        quantization = config.quantization or base_quantization(base)
        cache = AudioCache(max_files=32)
        trainable = load_trainable(base)
        train_set, skipped = examples(trainable, train_clips, config.fit.language)
        if not train_set:
            raise ManifestError(
                f"the train manifest {config.train_manifest} has no usable utterance ({skipped})"
            )
        current = _score_all(base, splits, config.eval, cache)
        log.info("training", device=str(device), utterances=len(train_set), steps=config.fit.steps)
        fitted = fit(trainable, train_set, config.fit, device)
        export(trainable, run_dir.staging, quantization=quantization)
        del trainable
        gc.collect()
        candidate = _score_all(run_dir.staging, splits, config.eval, cache)
        metrics = _metrics(config, base, fitted.seconds, fitted.losses, current, candidate)
        metrics["utterances"] = {
            "train": len(train_set),
            **{k: current[k].utterances for k in SPLITS},
        }
        metrics["skipped"] = {"train": skipped}
        metrics["model_bytes"] = sum(
            f.stat().st_size for f in run_dir.staging.iterdir() if f.is_file()
        )
        metrics["device"] = str(device)
        metrics["quantization"] = quantization
        run_dir.commit(metrics)
    return metrics


def _canary(directory: Path, base: Path) -> list[Clip]:
    clips = read_clips(directory / CANARY_MANIFEST)
    known = set(languages_of(base))
    return [c for c in clips if (c.language or "en") in known]


def _score_all(
    model_dir: Path, splits: dict[str, list[Clip]], settings: EvalSettings, cache: AudioCache
) -> dict[str, Scored]:
    started = time.perf_counter()
    transcriber = Transcriber(model_dir, settings)
    try:
        scored = {name: score(transcriber, clips, cache) for name, clips in splits.items()}
    finally:
        transcriber.close()
    log.info(
        "scored",
        model=str(model_dir),
        wer={k: v.wer for k, v in scored.items()},
        seconds=round(time.perf_counter() - started, 1),
    )
    return scored


def _metrics(
    config: RunConfig,
    base: Path,
    train_seconds: float,
    losses: Sequence[float],
    current: dict[str, Scored],
    candidate: dict[str, Scored],
) -> dict[str, Any]:
    return {
        "trainer": "whisper",
        "base_model": config.base_model,
        "base_model_dir": str(base),
        "model_dir": str(config.out / MODEL_DIR),
        "steps": config.fit.steps,
        "train_seconds": round(train_seconds, 3),
        "wer": {
            "current": {k: v.wer for k, v in current.items()},
            "candidate": {k: v.wer for k, v in candidate.items()},
        },
        "wer_by_language": {
            "current": {k: v.by_language for k, v in current.items()},
            "candidate": {k: v.by_language for k, v in candidate.items()},
        },
        "samples": {
            "current": {k: v.samples for k, v in current.items()},
            "candidate": {k: v.samples for k, v in candidate.items()},
        },
        "train_loss": {"first": losses[0], "last": losses[-1], "all": list(losses)},
        "batch_size": config.fit.batch_size,
        "lr": config.fit.lr,
        "freeze_encoder": config.fit.freeze_encoder,
        "freeze_embeddings": config.fit.freeze_embeddings,
        "train_layers": config.fit.layers,
        "anchor_weight": config.fit.anchor_weight,
        "seed": config.fit.seed,
        "train_manifest": config.train_manifest,
        "dev_manifest": config.dev_manifest,
        "test_manifest": config.test_manifest,
        "torch_version": torch.__version__,
    }
