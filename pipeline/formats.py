"""Transcript renderings: plain text, SRT, WebVTT, the CLI's timestamped lines.

``FORMATS`` is the one table of text renderings. The CLI's ``--format`` choices,
the values ``GET /v1/audio/{id}/transcript`` accepts and the OpenAI route's
``response_format``s are all derived from it, so adding a format is one entry here.
``json`` is not in the table: each surface answers it with its own document.

Cues of a split recording (``asr.channels = split``) carry their channel, shown as
``[ch1] `` before the text (txt, srt, the CLI's lines) or a ``<v ch1>`` voice span
(vtt); cues of mixed audio render exactly as they always have.

SRT and WebVTT cut each segment into readable cues within the caller's
``SubtitleSettings`` (``pipeline/subtitles.py``): at most two lines of 42 characters,
7 s a cue, by default. txt and the CLI's lines keep one line per segment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.subtitles import Piece, Word, split_segment, words_of

if TYPE_CHECKING:
    from pipeline.config import SubtitleSettings


@dataclass(frozen=True, slots=True)
class Cue:
    start: float
    end: float
    text: str
    # The channel of a split recording (0 = left); None for mixed audio.
    channel: int | None = None
    # The engine's word timings, when the transcript has them; they time the subtitles.
    words: tuple[Word, ...] = ()

    @property
    def label(self) -> str | None:
        """``ch1``, ``ch2``, ... (counted from 1, as people name channels); None when mixed."""
        return None if self.channel is None else f"ch{self.channel + 1}"

    @property
    def labelled_text(self) -> str:
        """The text, after a ``[ch1] `` prefix when the cue has a channel."""
        text = self.text.strip()
        return text if self.label is None else f"[{self.label}] {text}"

    def pieces(self, limits: SubtitleSettings) -> list[Piece]:
        """The readable subtitle cues of this segment; its label counts toward line one."""
        width = 0 if self.label is None else len(self.label) + 3  # "[ch1] "
        return split_segment(self.start, self.end, self.text, self.words, limits, label_width=width)


def cues_of(segments: Iterable[Mapping[str, Any]]) -> list[Cue]:
    """Cues from stored segment rows: ``start_s``, ``end_s``, ``text``, ``channel``, ``words``."""
    return [
        Cue(s["start_s"], s["end_s"], s["text"], s.get("channel"), words_of(s.get("words")))
        for s in segments
    ]


def _clock(seconds: float, sep: str) -> str:
    millis = max(0, math.floor(seconds * 1000 + 0.5))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def to_txt(cues: Sequence[Cue], limits: SubtitleSettings) -> str:
    """One line per segment; ``limits`` are for subtitles only."""
    return "\n".join(c.labelled_text for c in cues if c.text.strip()) + "\n"


def _subtitles(cues: Sequence[Cue], limits: SubtitleSettings) -> list[tuple[Cue, Piece]]:
    return [(cue, piece) for cue in cues for piece in cue.pieces(limits)]


def to_srt(cues: Sequence[Cue], limits: SubtitleSettings) -> str:
    blocks = [
        f"{n}\n{_clock(p.start, ',')} --> {_clock(p.end, ',')}\n{_srt_text(c, p)}\n"
        for n, (c, p) in enumerate(_subtitles(cues, limits), start=1)
    ]
    return "\n".join(blocks)


def _srt_text(cue: Cue, piece: Piece) -> str:
    text = "\n".join(piece.lines)
    return text if cue.label is None else f"[{cue.label}] {text}"


def to_vtt(cues: Sequence[Cue], limits: SubtitleSettings) -> str:
    blocks = [
        f"{_clock(p.start, '.')} --> {_clock(p.end, '.')}\n{_vtt_text(c, p)}\n"
        for c, p in _subtitles(cues, limits)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def _vtt_text(cue: Cue, piece: Piece) -> str:
    """A channel is WebVTT's voice span, ``<v ch1>``, which players show as the speaker."""
    text = "\n".join(piece.lines)
    return text if cue.label is None else f"<v {cue.label}>{text}"


def to_timestamped(cues: Sequence[Cue], limits: SubtitleSettings) -> str:
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

    # The cues and the subtitle limits (renderings of whole segments ignore them).
    render: Callable[[Sequence[Cue], SubtitleSettings], str]
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
