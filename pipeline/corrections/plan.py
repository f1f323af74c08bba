"""Checking a proposal against the revision it edits: the new revision's segments.

Pure. A corrected segment keeps its language and channel unless the person names
another language (for the segment, or for the whole transcript); it keeps the model's
scores (``avg_logprob`` and the rest) and word timings only while its text and
times are what the model produced: they describe the model's text, not a person's.
Times must lie within the audio, each segment ending at or after it starts, and
starts must never go backwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.config import CorrectionSettings
from pipeline.corrections.errors import CorrectionRefused
from pipeline.corrections.parse import Edit, Proposal

# Times closer than this are the same time (SRT and WebVTT keep milliseconds).
SAME_TIME_S = 0.0015
# How far past the audio's duration a segment may end (the model's own may, slightly).
END_SLACK_S = 0.05


@dataclass(frozen=True, slots=True)
class NewSegment:
    start_s: float
    end_s: float
    text: str
    language: str | None
    channel: int | None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    words: Any = None


def normalise(text: str) -> str:
    """One line, single spaces: a segment is a line of every export."""
    return " ".join(text.split())


def plan_segments(
    proposal: Proposal,
    base: Sequence[Mapping[str, Any]],
    *,
    language: str | None,
    duration_s: float,
    limits: CorrectionSettings,
) -> list[NewSegment]:
    """The corrected revision's segments; ``CorrectionRefused`` names the first problem.

    ``base``: the edited revision's segments (rows as ``catalog.get_transcript`` gives).
    """
    edits: Sequence[Edit] = proposal.edits
    if not edits:
        raise CorrectionRefused("the correction holds no segments: a transcript needs text")
    if len(edits) > limits.max_segments:
        raise CorrectionRefused(f"too many segments: {len(edits)} (at most {limits.max_segments})")
    if proposal.by_line:
        edits = _lines_on_segments(edits, base)
    by_idx = {int(s["idx"]): s for s in base}
    longest = max([duration_s, *(float(s["end_s"]) for s in base)]) + END_SLACK_S
    planned: list[NewSegment] = []
    seen: set[int] = set()
    for number, edit in enumerate(edits, start=1):
        segment = _planned(edit, number, by_idx, seen, language, base, limits)
        said = edit.language or proposal.language
        if said is not None and said != segment.language:
            # A person's word on what is spoken; the model's scores were about its guess.
            segment = NewSegment(
                segment.start_s, segment.end_s, segment.text, said, segment.channel
            )
        _check_times(segment, number, longest, planned[-1] if planned else None)
        planned.append(segment)
    return planned


def _lines_on_segments(edits: Sequence[Edit], base: Sequence[Mapping[str, Any]]) -> list[Edit]:
    """Plain text: line i is the text of the base's i-th segment with text."""
    spoken = [s for s in base if str(s["text"]).strip()]
    if len(edits) != len(spoken):
        raise CorrectionRefused(
            f"the text has {len(edits)} lines but the transcript has {len(spoken)} segments"
            " with text: write one line per segment (as the txt export has them), or send"
            " SRT, WebVTT or JSON with times"
        )
    return [Edit(e.text, idx=int(s["idx"])) for e, s in zip(edits, spoken, strict=True)]


def _planned(
    edit: Edit,
    number: int,
    by_idx: Mapping[int, Mapping[str, Any]],
    seen: set[int],
    language: str | None,
    base: Sequence[Mapping[str, Any]],
    limits: CorrectionSettings,
) -> NewSegment:
    text = normalise(edit.text)
    if not text:
        raise CorrectionRefused(f"segment {number} has no text (leave a segment out to remove it)")
    if len(text) > limits.max_segment_chars:
        raise CorrectionRefused(
            f"segment {number} has {len(text)} characters (at most {limits.max_segment_chars})"
        )
    if edit.idx is not None:
        origin = by_idx.get(edit.idx)
        if origin is None:
            raise CorrectionRefused(f"segment {number}: the transcript has no segment {edit.idx}")
        if edit.idx in seen:
            raise CorrectionRefused(f"segment {number}: segment {edit.idx} is given twice")
        seen.add(edit.idx)
        start = float(origin["start_s"]) if edit.start is None else edit.start
        end = float(origin["end_s"]) if edit.end is None else edit.end
        channel = origin.get("channel") if edit.channel is None else edit.channel
    else:
        if edit.start is None or edit.end is None:
            raise CorrectionRefused(
                f"segment {number} needs either idx (the segment it corrects) or start and end"
            )
        start, end, channel = edit.start, edit.end, edit.channel
        origin = _same_place(base, start, end, channel)
    if origin is None:
        spoken = _overlapping(base, start, end, channel)
        return NewSegment(start, end, text, _language(spoken, language), channel)
    unchanged = (
        normalise(str(origin["text"])) == text
        and abs(float(origin["start_s"]) - start) < SAME_TIME_S
        and abs(float(origin["end_s"]) - end) < SAME_TIME_S
    )
    segment = NewSegment(start, end, text, origin.get("language") or language, channel)
    if not unchanged:
        return segment
    return NewSegment(
        start,
        end,
        text,
        segment.language,
        channel,
        origin.get("avg_logprob"),
        origin.get("no_speech_prob"),
        origin.get("compression_ratio"),
        origin.get("words"),
    )


def _same_place(
    base: Sequence[Mapping[str, Any]], start: float, end: float, channel: int | None
) -> Mapping[str, Any] | None:
    """The base segment with these times and channel (a cue that kept its segment's)."""
    for s in base:
        if (
            s.get("channel") == channel
            and abs(float(s["start_s"]) - start) < SAME_TIME_S
            and abs(float(s["end_s"]) - end) < SAME_TIME_S
        ):
            return s
    return None


def _overlapping(
    base: Sequence[Mapping[str, Any]], start: float, end: float, channel: int | None
) -> Mapping[str, Any] | None:
    """The base segment of the channel that overlaps [start, end] most, if any does."""
    best, most = None, 0.0
    for s in base:
        if s.get("channel") != channel:
            continue
        overlap = min(end, float(s["end_s"])) - max(start, float(s["start_s"]))
        if overlap > most:
            best, most = s, overlap
    return best


def _language(origin: Mapping[str, Any] | None, fallback: str | None) -> str | None:
    found = origin.get("language") if origin is not None else None
    return str(found) if found else fallback


def _check_times(
    segment: NewSegment, number: int, longest: float, previous: NewSegment | None
) -> None:
    start, end = segment.start_s, segment.end_s
    if start < 0 or end < start:
        raise CorrectionRefused(
            f"segment {number} ends ({end:.3f} s) before it starts ({start:.3f} s)"
        )
    if end > longest:
        raise CorrectionRefused(
            f"segment {number} ends at {end:.3f} s, after the audio ends"
            f" ({longest - END_SLACK_S:.3f} s)"
        )
    if previous is not None and start + SAME_TIME_S < previous.start_s:
        raise CorrectionRefused(
            f"segment {number} starts at {start:.3f} s, before segment {number - 1}"
            f" ({previous.start_s:.3f} s): segments go in time order"
        )
