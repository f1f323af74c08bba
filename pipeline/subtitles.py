"""Cutting a segment into readable subtitle cues: few short lines, a few seconds each.

Whisper's segments run to ~100 characters and up to 30 s; broadcast subtitles keep to
``max_lines`` lines of ``max_line_chars`` characters shown for at most ``max_cue_s``.
A segment is cut into tokens (its words; single characters of CJK text, which has no
spaces), each with a time: the word timestamps where the segment has them, else the
segment's time shared out in proportion to characters. Tokens are then packed greedily
into lines and cues, never breaking inside a token: a token longer than a line stands
alone on its own line. A channel label (``[ch1] ``) takes room on a cue's first line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config import SubtitleSettings


# Scripts written without spaces between words (kana, CJK ideographs, their punctuation
# and full-width forms): each character is a token of its own, with the closing
# punctuation after it, so that no line starts with "。".
_CJK = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CLOSING = "、。，．！？：；」』）〕】"
_TOKEN = re.compile(rf"\s*(?:[{_CJK}][{_CLOSING}]*|[^\s{_CJK}]+)")


@dataclass(frozen=True, slots=True)
class Word:
    """A word as the engine timed it; ``text`` keeps its leading space, if any."""

    start: float
    end: float
    text: str


@dataclass(frozen=True, slots=True)
class Piece:
    """One readable cue cut from a segment: its times and its lines (label not included)."""

    start: float
    end: float
    lines: tuple[str, ...]


def words_of(stored: Sequence[Mapping[str, Any]] | None) -> tuple[Word, ...]:
    """Word timings from a stored segment's ``words`` (``start``, ``end``, ``word``)."""
    return tuple(Word(float(w["start"]), float(w["end"]), str(w["word"])) for w in stored or ())


def split_segment(
    start: float,
    end: float,
    text: str,
    words: Sequence[Word],
    limits: SubtitleSettings,
    *,
    label_width: int = 0,
) -> list[Piece]:
    """The cues of one segment; none when it has no text.

    ``label_width`` is the room a channel label takes at the start of each cue's first line.
    """
    end = max(start, end)
    tokens = _timed(words, start, end) if _has_text(words) else _proportional(text, start, end)
    pieces: list[Piece] = []
    current: list[list[Word]] = []

    def flush() -> None:
        if current:
            pieces.append(_piece(current, limits.max_cue_s))
            current.clear()

    for token in tokens:
        if current and token.end - current[0][0].start > limits.max_cue_s:
            flush()
        if not current:
            current.append([token])
            continue
        room = limits.max_line_chars - (label_width if len(current) == 1 else 0)
        if len(_line(current[-1] + [token])) <= room:
            current[-1].append(token)
        elif len(current) < limits.max_lines:
            current.append([token])
        else:
            flush()
            current.append([token])
    flush()
    return pieces


def _has_text(words: Sequence[Word]) -> bool:
    return any(w.text.strip() for w in words)


def _timed(words: Sequence[Word], start: float, end: float) -> list[Word]:
    """The words with text, their times kept inside the segment and never going back."""
    tokens: list[Word] = []
    floor = start
    for w in words:
        if not w.text.strip():
            continue
        w_start = min(max(w.start, floor), end)
        w_end = min(max(w.end, w_start), end)
        tokens.append(Word(w_start, w_end, w.text))
        floor = w_start
    return tokens


def _proportional(text: str, start: float, end: float) -> list[Word]:
    """Tokens of ``text``, the segment's time shared out by their characters."""
    parts = _TOKEN.findall(" ".join(text.split()))
    total = sum(len(p) for p in parts)
    tokens: list[Word] = []
    done = 0
    for part in parts:
        t0 = start + (end - start) * done / total
        done += len(part)
        tokens.append(Word(t0, start + (end - start) * done / total, part))
    return tokens


def _line(tokens: Sequence[Word]) -> str:
    return "".join(t.text for t in tokens).strip()


def _piece(lines: Sequence[Sequence[Word]], max_cue_s: float) -> Piece:
    """A cue from its lines; a lone token held longer than a cue may last is cut short."""
    first, last = lines[0][0], lines[-1][-1]
    return Piece(
        start=first.start,
        end=min(last.end, first.start + max_cue_s),
        lines=tuple(_line(line) for line in lines),
    )
