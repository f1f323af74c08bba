"""The optimisation loop: AdamW steps on CTC loss over the train manifest, then dev loss.

Runs are reproducible for a given ``--seed`` on the CPU: the seed fixes the
weights' initialisation and the order of the batches. On CUDA the CTC backward
pass uses atomic adds, so losses agree only to a few decimals between runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import structlog
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from pipeline.errors import Ai2TextError, ConfigError
from workers.trainer.features import HOP_LENGTH, N_FFT, N_MELS, WIN_LENGTH, LogMel, n_frames
from workers.trainer.manifest import (
    SAMPLE_RATE,
    AudioCache,
    Manifest,
    ManifestError,
    Utterance,
    read_manifest,
)
from workers.trainer.model import ModelConfig, TinyCTC, output_frames
from workers.trainer.text import BLANK, VOCAB, greedy_decode, min_ctc_frames

log = structlog.get_logger(__name__)

CHECKPOINT_FORMAT = "ai2text-reference-ctc/1"
# Clipping keeps the first steps, where CTC gradients are largest, from overshooting.
_MAX_GRAD_NORM = 5.0


class TrainingFailed(Ai2TextError):
    """Training itself went wrong (the loss stopped being a finite number)."""


@dataclass(frozen=True, slots=True)
class TrainConfig:
    train_manifest: str
    dev_manifest: str
    steps: int = 20
    batch_size: int = 4
    device: str = "auto"
    lr: float = 1e-3
    seed: int = 0


@dataclass(frozen=True, slots=True)
class TrainResult:
    checkpoint: dict[str, Any]
    metrics: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Split:
    utterances: tuple[Utterance, ...]
    skipped_empty_text: int
    skipped_too_short: int


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when torch sees a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"--device cuda was asked for, but torch {torch.__version__} sees no CUDA device"
            f" (built for CUDA {torch.version.cuda or 'none'})"
        )
    return torch.device(name)


def train(config: TrainConfig) -> TrainResult:
    """Train for ``config.steps`` steps and evaluate; raise Ai2TextError on bad input."""
    started = time.perf_counter()
    device = resolve_device(config.device)
    train_split = _usable(read_manifest(config.train_manifest))
    dev_split = _usable(read_manifest(config.dev_manifest))
    if not train_split.utterances:
        raise ManifestError(
            f"the train manifest {config.train_manifest} has no usable utterance"
            f" ({train_split.skipped_empty_text} without vocabulary characters,"
            f" {train_split.skipped_too_short} too short for their transcript)"
        )
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model_config = ModelConfig()
    model = TinyCTC(model_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    ctc = nn.CTCLoss(blank=0, reduction="mean")
    cache = AudioCache()
    front = LogMel(device)
    batch_size = min(config.batch_size, len(train_split.utterances))
    log.info(
        "training",
        device=str(device),
        train_utterances=len(train_split.utterances),
        dev_utterances=len(dev_split.utterances),
        steps=config.steps,
        batch_size=batch_size,
    )

    losses: list[float] = []
    seen = 0
    seconds = 0.0
    model.train()
    batches = _batches(train_split.utterances, batch_size, generator)
    for step in range(1, config.steps + 1):
        batch = next(batches)
        log_probs, out_lengths, targets, target_lengths = _forward(model, front, cache, batch)
        loss = ctc(log_probs, targets, out_lengths, target_lengths)
        value = float(loss.item())
        if not torch.isfinite(loss):
            raise TrainingFailed(f"the loss became {value} at step {step}; try a lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), _MAX_GRAD_NORM)
        optimizer.step()
        losses.append(value)
        seen += len(batch)
        seconds += sum(u.duration for u in batch)
        log.info("step", step=step, loss=round(value, 4))

    dev_loss, sample = _evaluate(model, front, cache, dev_split.utterances, batch_size)
    wall = time.perf_counter() - started
    metrics: dict[str, Any] = {
        "steps": config.steps,
        "train_loss": losses,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "dev_loss": dev_loss,
        "dev_utterances": len(dev_split.utterances),
        "dev_sample": sample,
        "train_utterances": len(train_split.utterances),
        "utterances_seen": seen,
        "audio_seconds_seen": round(seconds, 3),
        "skipped": {
            "train": {
                "empty_text": train_split.skipped_empty_text,
                "too_short": train_split.skipped_too_short,
            },
            "dev": {
                "empty_text": dev_split.skipped_empty_text,
                "too_short": dev_split.skipped_too_short,
            },
        },
        "decoded_files": cache.decoded_files,
        "device": str(device),
        "wall_time_s": round(wall, 3),
        "batch_size": batch_size,
        "lr": config.lr,
        "seed": config.seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_manifest": config.train_manifest,
        "dev_manifest": config.dev_manifest,
        "torch_version": torch.__version__,
    }
    checkpoint: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "vocab": list(VOCAB),
        "blank": VOCAB.index(BLANK),
        "config": {
            "model": model_config.to_dict(),
            "features": {
                "sample_rate": SAMPLE_RATE,
                "n_mels": N_MELS,
                "n_fft": N_FFT,
                "win_length": WIN_LENGTH,
                "hop_length": HOP_LENGTH,
                "normalization": "per-utterance mean/variance per band",
            },
            "train": asdict(config),
        },
        "steps": config.steps,
        "last_loss": losses[-1],
        "dev_loss": dev_loss,
    }
    return TrainResult(checkpoint=checkpoint, metrics=metrics)


def _usable(manifest: Manifest) -> _Split:
    """Drop utterances too short for CTC to emit their transcript (it would give inf)."""
    kept = []
    too_short = 0
    for u in manifest.utterances:
        frames = output_frames(n_frames(round(u.duration * SAMPLE_RATE)))
        if frames < min_ctc_frames(u.target):
            too_short += 1
            log.warning("utterance too short for its transcript", where=u.where)
            continue
        kept.append(u)
    return _Split(tuple(kept), manifest.skipped_empty_text, too_short)


def _batches(
    utterances: Sequence[Utterance], size: int, generator: torch.Generator
) -> Iterator[list[Utterance]]:
    """Endless batches: the manifest in a new random order each pass, cut into ``size``.

    A batch may span the end of one pass and the start of the next.
    """
    pending: list[int] = []
    while True:
        while len(pending) < size:
            pending.extend(torch.randperm(len(utterances), generator=generator).tolist())
        yield [utterances[i] for i in pending[:size]]
        del pending[:size]


def _forward(
    model: TinyCTC, front: LogMel, cache: AudioCache, batch: Sequence[Utterance]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    features = [front(cache.clip(u)) for u in batch]
    lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.long)
    padded = pad_sequence(features, batch_first=True)
    log_probs, out_lengths = model(padded, lengths)
    targets = torch.tensor([i for u in batch for i in u.target], dtype=torch.long)
    target_lengths = torch.tensor([len(u.target) for u in batch], dtype=torch.long)
    return log_probs, out_lengths, targets.to(front.device), target_lengths


def _evaluate(
    model: TinyCTC,
    front: LogMel,
    cache: AudioCache,
    utterances: Sequence[Utterance],
    batch_size: int,
) -> tuple[float | None, dict[str, str] | None]:
    """Mean per-utterance CTC loss (normalised by target length, like training's)."""
    if not utterances:
        return None, None
    ctc = nn.CTCLoss(blank=0, reduction="none")
    total = 0.0
    sample: dict[str, str] | None = None
    model.eval()
    with torch.no_grad():
        for start in range(0, len(utterances), batch_size):
            batch = utterances[start : start + batch_size]
            log_probs, out_lengths, targets, target_lengths = _forward(model, front, cache, batch)
            per_utterance = ctc(log_probs, targets, out_lengths, target_lengths)
            total += float((per_utterance / target_lengths.to(per_utterance.device)).sum())
            if sample is None:
                best = log_probs[: int(out_lengths[0]), 0].argmax(dim=-1).tolist()
                sample = {"reference": batch[0].text, "hypothesis": greedy_decode(best)}
    model.train()
    return total / len(utterances), sample
