"""The character vocabulary of the reference model and text normalisation into it.

Transcripts are lowercased, accents are stripped (``é`` -> ``e``), typographic
apostrophes become ``'`` and everything else outside the vocabulary becomes a
space, so digits and non-Latin scripts vanish: good enough for a reference run on
English, wrong for a real multilingual recipe.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

BLANK = "<blank>"
# Index 0 is the CTC blank; torch.nn.CTCLoss is built with blank=0.
VOCAB: tuple[str, ...] = (BLANK, " ", "'", *"abcdefghijklmnopqrstuvwxyz")
_INDEX = {ch: i for i, ch in enumerate(VOCAB)}

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})
_OUTSIDE = re.compile(r"[^a-z' ]+")
_SPACES = re.compile(r" {2,}")


def normalize(text: str) -> str:
    """Map ``text`` onto the vocabulary: ``"Américans, ask!"`` -> ``"americans ask"``."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    cleaned = _OUTSIDE.sub(" ", stripped.lower())
    return _SPACES.sub(" ", cleaned).strip()


def encode(normalized: str) -> tuple[int, ...]:
    """Indices of an already normalised text (blank never appears in a target)."""
    return tuple(_INDEX[ch] for ch in normalized)


def greedy_decode(indices: Sequence[int]) -> str:
    """Best-path CTC decoding: merge repeats, then drop blanks."""
    out: list[str] = []
    previous = -1
    for index in indices:
        if index != previous and index != 0:
            out.append(VOCAB[index])
        previous = index
    return "".join(out)


def min_ctc_frames(target: Sequence[int]) -> int:
    """Frames CTC needs to emit ``target``: one per label plus a blank between repeats."""
    repeats = sum(1 for a, b in zip(target, target[1:], strict=False) if a == b)
    return len(target) + repeats
