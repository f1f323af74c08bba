"""Keeping what the base model knows while it learns a domain.

Two measures, both chosen by ``FitConfig``:

* ``train_layers``: which parameters train. ``"all"``, ``"decoder"`` (the encoder
  frozen), or ``"decoder-top-N"``: only the top N decoder blocks and the decoder's
  final layer norm; the token embeddings (tied to the output projection), the
  positions and the lower blocks stay as they are.
* L2-SP (Li et al., 2018): ``weight * sum ||theta - theta0||^2`` over the trainable
  parameters added to the loss, so that parameters the domain does not need are
  pulled back to the base's values. Adam moves every parameter by about the learning
  rate each step, whatever the size of its gradient; the anchor undoes that drift
  for parameters whose task gradient is small, which is where forgetting comes from.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import WhisperForConditionalGeneration

from pipeline.errors import Ai2TextError

_TOP = re.compile(r"^decoder-top-([1-9][0-9]*)$")
LAYER_CHOICES = "all, decoder, decoder-top-N"


class LayerChoiceError(Ai2TextError):
    """``train_layers`` names no known set of layers, or more blocks than the model has."""


def top_blocks(train_layers: str) -> int | None:
    """N for ``decoder-top-N``; None for ``all`` and ``decoder``."""
    if train_layers in ("all", "decoder"):
        return None
    match = _TOP.match(train_layers)
    if match is None:
        raise LayerChoiceError(f"train layers {train_layers!r}: expected one of {LAYER_CHOICES}")
    return int(match.group(1))


def select_trainable(
    model: WhisperForConditionalGeneration, train_layers: str, *, freeze_embeddings: bool
) -> None:
    """Set ``requires_grad`` on ``model``'s parameters in place."""
    top = top_blocks(train_layers)
    whisper = model.model
    if top is None:
        model.requires_grad_(True)
        if train_layers == "decoder":
            whisper.encoder.requires_grad_(False)
        if freeze_embeddings:
            whisper.decoder.embed_tokens.requires_grad_(False)
        return
    blocks = whisper.decoder.layers
    if top > len(blocks):
        raise LayerChoiceError(
            f"train layers {train_layers!r}: the decoder has only {len(blocks)} blocks"
        )
    model.requires_grad_(False)
    for block in blocks[len(blocks) - top :]:
        block.requires_grad_(True)
    whisper.decoder.layer_norm.requires_grad_(True)


def encoder_trains(model: WhisperForConditionalGeneration) -> bool:
    return any(p.requires_grad for p in model.model.encoder.parameters())


class Anchor:
    """The trainable parameters' starting values, and the L2-SP penalty against them."""

    def __init__(self, params: list[nn.Parameter], weight: float) -> None:
        if weight < 0:
            raise ValueError(f"anchor weight must be >= 0, not {weight}")
        self.weight = weight
        self.params = params
        self.start = [p.detach().clone() for p in params] if weight > 0 else []

    def penalty(self) -> torch.Tensor | None:
        """``weight * sum ||p - p0||^2``, or None when the weight is 0 (nothing kept)."""
        if not self.start:
            return None
        total = sum(((p - p0) ** 2).sum() for p, p0 in zip(self.params, self.start, strict=True))
        assert isinstance(total, torch.Tensor)
        return self.weight * total

    def distance(self) -> float:
        """``sqrt(sum ||p - p0||^2)``, for the log (0.0 when nothing is kept)."""
        if not self.start:
            return 0.0
        with torch.no_grad():
            squared = sum(
                float(((p - p0) ** 2).sum()) for p, p0 in zip(self.params, self.start, strict=True)
            )
        return float(squared**0.5)
