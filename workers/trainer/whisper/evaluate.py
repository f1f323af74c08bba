"""Word error rate of a CTranslate2 model directory, transcribed as the workers do.

Each clip goes through ``workers.engines.faster_whisper.FasterWhisperEngine``
(the workers' engine, with their decoding settings: beam size, VAD) in the
clip's language when the model has it, else with language detection. Texts are
compared after the normalisation the project's WER checks use elsewhere (lower
case, everything but letters, digits and spaces removed); WER is over the whole
split (errors / reference words), not a mean of per-clip rates.
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer
import structlog

from pipeline.config import AsrSettings
from workers.engines.base import WindowRequest
from workers.engines.faster_whisper import FasterWhisperEngine
from workers.trainer.manifest import AudioCache, Clip

log = structlog.get_logger(__name__)


def normalise(text: str) -> str:
    """Lower case, punctuation stripped, single spaces: what WER is measured on."""
    kept = "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower())
    return " ".join(kept.split())


@dataclass(frozen=True, slots=True)
class Scored:
    wer: float | None
    by_language: dict[str, float]
    utterances: int
    samples: list[dict[str, str]]
    """A few (reference, hypothesis) pairs, to read what changed."""


@dataclass(frozen=True, slots=True)
class EvalSettings:
    device: str = "auto"
    compute_type: str = "auto"
    beam_size: int = 5
    cpu_threads: int = 0


class Transcriber:
    """One model directory loaded through the workers' engine."""

    def __init__(self, model_dir: Path, settings: EvalSettings) -> None:
        asr = AsrSettings(
            model=str(model_dir),
            device=settings.device,
            compute_type=settings.compute_type,
            beam_size=settings.beam_size,
            cpu_threads=settings.cpu_threads,
        )
        self.engine = FasterWhisperEngine(asr)
        self.engine.load()
        self.languages = set(self.engine.languages)
        self.english_only = self.languages <= {"en"}

    def __call__(self, clip: Clip, cache: AudioCache) -> str:
        language = "en" if self.english_only else clip.language
        if language not in self.languages:
            language = None
        result = self.engine.transcribe_window(cache.clip(clip), WindowRequest(language=language))
        return " ".join(s.text.strip() for s in result.segments)

    def close(self) -> None:
        del self.engine
        gc.collect()


def score(transcribe: Transcriber, clips: Sequence[Clip], cache: AudioCache) -> Scored:
    """WER of ``clips`` (those with a non-empty normalised text), overall and per language."""
    refs: list[str] = []
    hyps: list[str] = []
    by_language: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    shown: list[dict[str, str]] = []
    for clip in clips:
        reference = normalise(clip.text)
        if not reference:
            continue
        hypothesis = normalise(transcribe(clip, cache))
        refs.append(reference)
        hyps.append(hypothesis)
        lang_refs, lang_hyps = by_language[clip.language or "unknown"]
        lang_refs.append(reference)
        lang_hyps.append(hypothesis)
        if len(shown) < 3:
            shown.append({"reference": reference, "hypothesis": hypothesis})
    return Scored(
        wer=_wer(refs, hyps),
        by_language={
            code: w for code, (r, h) in sorted(by_language.items()) if (w := _wer(r, h)) is not None
        },
        utterances=len(refs),
        samples=shown,
    )


def _wer(refs: list[str], hyps: list[str]) -> float | None:
    if not refs:
        return None
    return round(float(jiwer.wer(refs, hyps)), 4)
