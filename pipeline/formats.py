"""Transcript renderings: plain text, SRT, WebVTT."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cue:
    start: float
    end: float
    text: str


def _clock(seconds: float, sep: str) -> str:
    millis = max(0, math.floor(seconds * 1000 + 0.5))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def to_txt(cues: Sequence[Cue]) -> str:
    return "\n".join(c.text.strip() for c in cues if c.text.strip()) + "\n"


def to_srt(cues: Sequence[Cue]) -> str:
    blocks = [
        f"{n}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n{c.text.strip()}\n"
        for n, c in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(cues: Sequence[Cue]) -> str:
    blocks = [f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n{c.text.strip()}\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_timestamped(cues: Sequence[Cue]) -> str:
    """The CLI's default view: one ``[start → end] text`` line per segment."""
    return "".join(
        f"[{_clock(c.start, '.')} → {_clock(c.end, '.')}] {c.text.strip()}\n" for c in cues
    )
