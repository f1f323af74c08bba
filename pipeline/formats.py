"""Transcript renderings: plain text, SRT, WebVTT, the CLI's timestamped lines.

``FORMATS`` is the one table of text renderings. The CLI's ``--format`` choices,
the values ``GET /v1/audio/{id}/transcript`` accepts and the OpenAI route's
``response_format``s are all derived from it, so adding a format is one entry here.
``json`` is not in the table: each surface answers it with its own document.

Cues of a split recording (``asr.channels = split``) carry their channel, shown as
``[ch1] `` before the text (txt, srt, the CLI's lines) or a ``<v ch1>`` voice span
(vtt); cues of mixed audio render exactly as they always have.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Cue:
    start: float
    end: float
    text: str
    # The channel of a split recording (0 = left); None for mixed audio.
    channel: int | None = None

    @property
    def label(self) -> str | None:
        """``ch1``, ``ch2``, ... (counted from 1, as people name channels); None when mixed."""
        return None if self.channel is None else f"ch{self.channel + 1}"

    @property
    def labelled_text(self) -> str:
        """The text, after a ``[ch1] `` prefix when the cue has a channel."""
        text = self.text.strip()
        return text if self.label is None else f"[{self.label}] {text}"


def cues_of(segments: Iterable[Mapping[str, Any]]) -> list[Cue]:
    """Cues from stored segment rows: ``start_s``, ``end_s``, ``text`` and ``channel``."""
    return [Cue(s["start_s"], s["end_s"], s["text"], s.get("channel")) for s in segments]


def _clock(seconds: float, sep: str) -> str:
    millis = max(0, math.floor(seconds * 1000 + 0.5))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def to_txt(cues: Sequence[Cue]) -> str:
    return "\n".join(c.labelled_text for c in cues if c.text.strip()) + "\n"


def to_srt(cues: Sequence[Cue]) -> str:
    blocks = [
        f"{n}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n{c.labelled_text}\n"
        for n, c in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(cues: Sequence[Cue]) -> str:
    blocks = [f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n{_vtt_text(c)}\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def _vtt_text(cue: Cue) -> str:
    """A channel is WebVTT's voice span, ``<v ch1>``, which players show as the speaker."""
    text = cue.text.strip()
    return text if cue.label is None else f"<v {cue.label}>{text}"


def to_timestamped(cues: Sequence[Cue]) -> str:
    """The CLI's default view: one ``[start → end] text`` line per segment."""
    return "".join(
        f"[{_clock(c.start, '.')} → {_clock(c.end, '.')}] {c.labelled_text}\n" for c in cues
    )


JSON = "json"
# OpenAI's own renderings, built by its route: the transcript's text, and its JSON shapes.
OPENAI_OWN_FORMATS = ("text", "verbose_json")


@dataclass(frozen=True, slots=True)
class TextFormat:
    """A rendering of a transcript's cues, and where it is offered."""

    render: Callable[[Sequence[Cue]], str]
    media_type: str
    api: bool = True  # offered by ``GET /v1/audio/{id}/transcript``
    openai: bool = False  # offered as an OpenAI ``response_format`` of the same name


# Keys are the format names users type; the order is the order they are listed in.
FORMATS: dict[str, TextFormat] = {
    "timestamps": TextFormat(to_timestamped, "text/plain", api=False),
    "txt": TextFormat(to_txt, "text/plain"),
    "srt": TextFormat(to_srt, "application/x-subrip", openai=True),
    "vtt": TextFormat(to_vtt, "text/vtt", openai=True),
}


def cli_formats() -> tuple[str, ...]:
    """``ai2text show --format`` choices: every rendering, then ``json``."""
    return (*FORMATS, JSON)


def api_formats() -> tuple[str, ...]:
    """``format`` values of ``GET /v1/audio/{id}/transcript``: ``json``, then the renderings."""
    return (JSON, *(name for name, f in FORMATS.items() if f.api))


def openai_formats() -> tuple[str, ...]:
    """OpenAI ``response_format`` values, in OpenAI's order."""
    text, verbose = OPENAI_OWN_FORMATS
    return (JSON, text, *(name for name, f in FORMATS.items() if f.openai), verbose)
