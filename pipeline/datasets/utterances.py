"""From Whisper segments to training utterances, and which split an item belongs to.

Pure functions: segments that pass the quality filters are merged, in order,
into utterances of at most ``max_utterance_s``; a gap left by a dropped segment
ends the current utterance (an utterance never spans audio we judged bad). An
utterance is in one language: a segment in another language ends it too, and a
segment in a language the dataset does not hold is dropped like a bad one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from pipeline.config import DatasetSettings

Split = Literal["train", "dev", "test"]


@dataclass(frozen=True, slots=True)
class SegmentRow:
    start: float
    end: float
    text: str
    avg_logprob: float | None
    no_speech_prob: float | None
    compression_ratio: float | None
    # The segment's language, else its transcript's (see ``eligibility.SEGMENT_LANGUAGE``).
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Utterance:
    offset: float
    duration: float
    text: str
    language: str | None = None


def passes(segment: SegmentRow, rules: DatasetSettings) -> bool:
    """Quality filters on one segment (missing scores do not disqualify)."""
    length = segment.end - segment.start
    if not segment.text.strip():
        return False
    if length < rules.min_segment_s or length > rules.max_segment_s:
        return False
    if segment.no_speech_prob is not None and segment.no_speech_prob > rules.max_no_speech_prob:
        return False
    if segment.avg_logprob is not None and segment.avg_logprob < rules.min_avg_logprob:
        return False
    return not (
        segment.compression_ratio is not None
        and segment.compression_ratio > rules.max_compression_ratio
    )


def utterances(
    segments: Iterable[SegmentRow],
    rules: DatasetSettings,
    languages: Collection[str] | None = None,
) -> Iterator[Utterance]:
    """Merge consecutive good segments of one language into utterances no longer than
    the maximum; with ``languages``, segments in any other language are dropped."""
    current: list[SegmentRow] = []
    for segment in segments:
        wanted = languages is None or segment.language in languages
        if not (wanted and passes(segment, rules)):
            yield from _emit(current)
            current = []
            continue
        if current and (
            segment.language != current[0].language
            or segment.end - current[0].start > rules.max_utterance_s
        ):
            yield from _emit(current)
            current = []
        current.append(segment)
    yield from _emit(current)


def _emit(group: list[SegmentRow]) -> Iterator[Utterance]:
    if not group:
        return
    start = group[0].start
    text = " ".join(s.text.strip() for s in group if s.text.strip())
    yield Utterance(
        offset=round(start, 3),
        duration=round(group[-1].end - start, 3),
        text=text,
        language=group[0].language,
    )


def split_for(group_key: str, rules: DatasetSettings) -> Split:
    """A stable split from a hash of the grouping key: the same key, the same split, always."""
    bucket = int.from_bytes(hashlib.sha256(group_key.encode()).digest()[:8], "big") / 2**64
    if bucket < rules.train_ratio:
        return "train"
    if bucket < rules.train_ratio + rules.dev_ratio:
        return "dev"
    return "test"
