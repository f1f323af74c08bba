"""Fine-tuning: AdamW steps of cross-entropy on the text tokens of the train split.

Each utterance is Whisper's 30 s log-mel window of its audio slice and the decoder
sequence of ``tokens.WhisperTokens.sequence``, half of them (by seeded coin) with
timestamps, as faster-whisper decodes with them. Loss is taken on what the model
must predict, not on the tokens faster-whisper forces. ``--freeze-encoder`` trains
the decoder only and runs the encoder without gradients: less than half the memory
and time; the encoder's outputs are then also kept (up to ``ENCODER_CACHE_BYTES``)
so later passes over the same utterance skip it. Memory is otherwise bounded by the
batch: features are computed per batch, audio is decoded through a bounded cache.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog
import torch
from torch import nn
from transformers import WhisperFeatureExtractor

from pipeline.errors import Ai2TextError
from workers.trainer.manifest import SAMPLE_RATE, AudioCache, Clip, ManifestError
from workers.trainer.whisper.forgetting import Anchor, encoder_trains, select_trainable
from workers.trainer.whisper.mapping import Trainable
from workers.trainer.whisper.tokens import MAX_TIMESTAMP_S

log = structlog.get_logger(__name__)

_MAX_GRAD_NORM = 1.0
_IGNORE = -100
ENCODER_CACHE_BYTES = 1 << 30
DEFAULT_ANCHOR_WEIGHT = 10.0
"""Kept the canary set where it was while the domain was learnt (bench/README.md)."""


class TrainingFailed(Ai2TextError):
    """The loss stopped being a finite number."""


@dataclass(frozen=True, slots=True)
class FitConfig:
    steps: int = 20
    batch_size: int = 4
    lr: float = 1e-5
    freeze_encoder: bool = False
    freeze_embeddings: bool = False
    """Keep the token embeddings (tied to the output projection) as they are."""
    language: str | None = None
    """For lines without ``lang`` (multilingual models only)."""
    seed: int = 0
    timestamp_share: float = 0.5
    train_layers: str = "all"
    """``all``, ``decoder`` or ``decoder-top-N`` (see ``forgetting.select_trainable``)."""
    anchor_weight: float = DEFAULT_ANCHOR_WEIGHT
    """L2-SP weight: ``anchor_weight * sum ||theta - theta0||^2`` joins the loss (0: off)."""

    @property
    def layers(self) -> str:
        """``train_layers`` with ``freeze_encoder`` folded in."""
        if self.freeze_encoder and self.train_layers == "all":
            return "decoder"
        return self.train_layers


@dataclass(frozen=True, slots=True)
class Example:
    clip: Clip
    language: str | None
    text_ids: tuple[int, ...]


@dataclass(slots=True)
class FitResult:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    utterances_seen: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def examples(
    trainable: Trainable, clips: Sequence[Clip], language: str | None
) -> tuple[list[Example], dict[str, int]]:
    """The clips the model can learn from, and how many were left out and why."""
    tokens = trainable.tokens
    limit = trainable.model.config.max_target_positions
    kept: list[Example] = []
    skipped = {"empty_text": 0, "too_long_audio": 0, "too_many_tokens": 0}
    for clip in clips:
        lang = _language(trainable, clip, language)
        if not clip.text:
            skipped["empty_text"] += 1
            continue
        if clip.duration > MAX_TIMESTAMP_S:
            skipped["too_long_audio"] += 1
            log.warning("utterance longer than Whisper's 30 s window", where=clip.where)
            continue
        ids = tokens.text_ids(clip.text)
        if len(ids) + 6 > limit:
            skipped["too_many_tokens"] += 1
            continue
        kept.append(Example(clip, lang, tuple(ids)))
    return kept, skipped


def _language(trainable: Trainable, clip: Clip, fallback: str | None) -> str | None:
    tokens = trainable.tokens
    lang = clip.language or fallback
    if not tokens.multilingual:
        if lang not in (None, "en"):
            raise ManifestError(
                f"{clip.where}: language {lang!r}, but the base model is English-only"
            )
        return None
    if lang is None:
        raise ManifestError(f"{clip.where}: no 'lang' field; pass --language for such lines")
    if lang not in tokens.languages:
        raise ManifestError(f"{clip.where}: the base model does not know language {lang!r}")
    return lang


def fit(
    trainable: Trainable, train: Sequence[Example], config: FitConfig, device: torch.device
) -> FitResult:
    """Train ``trainable.model`` in place for ``config.steps`` steps."""
    model = trainable.model
    model.to(device)  # type: ignore[arg-type]
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    features = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)  # type: ignore[no-untyped-call]
    encoder = model.get_encoder()
    select_trainable(model, config.layers, freeze_embeddings=config.freeze_embeddings)
    frozen_encoder = not encoder_trains(model)
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = Anchor(params, config.anchor_weight)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    warmup = max(1, min(10, config.steps // 10))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    cache = AudioCache(max_files=32)
    batch_size = min(config.batch_size, len(train))
    result = FitResult()
    started = time.perf_counter()
    model.train()
    if frozen_encoder:
        encoder.eval()
    encoded = _EncoderCache(ENCODER_CACHE_BYTES) if frozen_encoder else None
    batches = _batches(train, batch_size, generator)
    for step in range(1, config.steps + 1):
        batch = next(batches)
        loss = _loss(trainable, features, cache, encoded, batch, config, generator, device)
        value = float(loss.item())
        if not np.isfinite(value):
            raise TrainingFailed(f"the loss became {value} at step {step}; try a lower --lr")
        penalty = anchor.penalty()
        optimizer.zero_grad(set_to_none=True)
        (loss if penalty is None else loss + penalty).backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(params, _MAX_GRAD_NORM)
        optimizer.step()
        schedule.step()
        result.losses.append(value)
        result.utterances_seen += len(batch)
        if penalty is None:
            log.info("step", step=step, loss=round(value, 4))
        else:
            log.info("step", step=step, loss=round(value, 4), drift=round(anchor.distance(), 5))
    result.seconds = time.perf_counter() - started
    model.eval()  # type: ignore[no-untyped-call]
    model.to("cpu")  # type: ignore[arg-type]
    return result


def _loss(
    trainable: Trainable,
    features: WhisperFeatureExtractor,
    cache: AudioCache,
    encoded: _EncoderCache | None,
    batch: Sequence[Example],
    config: FitConfig,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    model = trainable.model

    def mel_of(items: Sequence[Example]) -> torch.Tensor:
        audio = [cache.clip(e.clip) for e in items]
        mel = features(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
        return torch.from_numpy(np.asarray(mel, dtype=np.float32)).to(device)

    sequences = []
    for example in batch:
        stamped = float(torch.rand(1, generator=generator)) < config.timestamp_share
        sequences.append(
            trainable.tokens.sequence(
                example.language, list(example.text_ids), example.clip.duration, timestamps=stamped
            )
        )
    width = max(len(s) for s, _ in sequences) - 1
    decoder_in = torch.full((len(batch), width), trainable.tokens.eot, dtype=torch.long)
    labels = torch.full((len(batch), width), _IGNORE, dtype=torch.long)
    for row, (sequence, forced) in enumerate(sequences):
        n = len(sequence) - 1
        decoder_in[row, :n] = torch.tensor(sequence[:-1])
        target = torch.tensor(sequence[1:])
        target[: forced - 1] = _IGNORE  # tokens faster-whisper forces are not learned
        labels[row, :n] = target
    if encoded is not None:
        known = {e: encoded.get(e) for e in batch if e in encoded}
        missing = list(dict.fromkeys(e for e in batch if e not in known))
        if missing:
            with torch.no_grad():
                states = model.get_encoder()(mel_of(missing)).last_hidden_state
            for example, state in zip(missing, states, strict=True):
                known[example] = state
                encoded.put(example, state)
        hidden = torch.stack([known[e] for e in batch])
        out = model(encoder_outputs=(hidden,), decoder_input_ids=decoder_in.to(device))
    else:
        out = model(input_features=mel_of(batch), decoder_input_ids=decoder_in.to(device))
    logits = out.logits
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.to(device).reshape(-1), ignore_index=_IGNORE
    )


class _EncoderCache:
    """Encoder outputs of a frozen encoder by example, least recently used dropped first."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._states: OrderedDict[Example, torch.Tensor] = OrderedDict()
        self._bytes = 0

    def __contains__(self, example: object) -> bool:
        return example in self._states

    def get(self, example: Example) -> torch.Tensor:
        self._states.move_to_end(example)
        return self._states[example]

    def put(self, example: Example, state: torch.Tensor) -> None:
        state = state.detach().clone()
        self._states[example] = state
        self._bytes += state.element_size() * state.nelement()
        # Never drop the newest entry: the batch being built still needs it.
        while self._bytes > self.max_bytes and len(self._states) > 1:
            _, dropped = self._states.popitem(last=False)
            self._bytes -= dropped.element_size() * dropped.nelement()


def _batches(
    items: Sequence[Example], size: int, generator: torch.Generator
) -> Iterator[list[Example]]:
    """Endless batches: the examples in a new random order each pass."""
    pending: list[int] = []
    while True:
        while len(pending) < size:
            pending.extend(torch.randperm(len(items), generator=generator).tolist())
        yield [items[i] for i in pending[:size]]
        del pending[:size]
