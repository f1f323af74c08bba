"""Stereo calls with one speaker per channel: each channel transcribed on its own.

``asr.channels`` (or a job's ``channels`` option) chooses. ``mix`` hands the file to
the long-audio transcriber as it is, mixed down to mono. ``split`` transcribes each
channel the decoder reports, one after the other through the same transcriber (so
windows, languages, retries and cancelling stay as they are), and merges the
segments in time order, each labelled with its channel (0 = left).

Audio with one channel, and "dual mono" (every channel holding the same signal, as
many recorders save mono), is transcribed once, as under ``mix``: its segments carry
no channel, so a split folder of mixed recordings never gets the same words twice.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import get_args

import structlog

from pipeline.config import Channels
from pipeline.errors import PermanentError, RejectedInput
from pipeline.media import channel_count, channels_carry_one_signal
from workers.transcription import (
    Cancelled,
    DelegatingTranscriber,
    Segment,
    TranscribeOptions,
    Transcriber,
    Transcription,
)

log = structlog.get_logger(__name__)

MODES: tuple[str, ...] = get_args(Channels)


class ChannelSplitter(DelegatingTranscriber):
    """A ``Transcriber`` that honours the ``channels`` choice around another one."""

    def __init__(self, inner: Transcriber, *, default: Channels = "mix") -> None:
        super().__init__(inner)
        self.default = default

    def transcribe(
        self, audio_path: Path, cancel: threading.Event, options: TranscribeOptions | None = None
    ) -> Transcription:
        opts = options or TranscribeOptions()
        mode = opts.channels or self.default
        if mode not in MODES:
            raise PermanentError(
                f"unknown channels choice {mode!r}: expected one of {', '.join(MODES)}"
            )
        channels = _separate_channels(audio_path) if mode == "split" else 1
        if channels < 2:
            return self.inner.transcribe(audio_path, cancel, opts)
        started = time.monotonic()
        results: list[Transcription] = []
        for channel in range(channels):
            if cancel.is_set():
                raise Cancelled("transcription cancelled")
            # Progress through the whole job, on the file's clock: each channel is 1/n of it.
            before_s = sum(r.audio_duration_s for r in results)
            hook = _share(opts.on_progress, before_s, channels)
            result = self.inner.transcribe(
                audio_path, cancel, dataclasses.replace(opts, channel=channel, on_progress=hook)
            )
            log.info("channel transcribed", channel=channel, segments=len(result.segments))
            results.append(result)
        return merge_channels(results, processing_s=time.monotonic() - started)


def _share(
    hook: Callable[[float], None] | None, before_s: float, parts: int
) -> Callable[[float], None] | None:
    """A channel's progress as progress through all ``parts`` channels, one after another."""
    if hook is None:
        return None
    return lambda seconds: hook((before_s + seconds) / parts)


def _separate_channels(audio_path: Path) -> int:
    """How many channels to transcribe apart: 1 for mono and for dual mono.

    A file the decoder cannot open counts as one channel; the transcriber then
    reports why it cannot be decoded, as it does for every file.
    """
    try:
        with open(audio_path, "rb") as source:
            channels = channel_count(source)
            if channels > 1 and channels_carry_one_signal(source):
                log.info("every channel holds the same signal; transcribed once", channels=channels)
                return 1
            return channels
    except RejectedInput:
        return 1


def merge_channels(results: Sequence[Transcription], *, processing_s: float) -> Transcription:
    """One transcription of the channels in ``results`` (index = channel), in time order.

    Segments are labelled with their channel and sorted by start; at the same start,
    the lower channel (left) comes first. The transcript's language is that of the
    channel with the most transcribed speech; speech and covered speech are the
    channels' sums (unknown if any channel's is). Fields not merged here come from
    that same channel.
    """
    if not results:
        raise ValueError("no channels to merge")
    segments = sorted(
        (
            dataclasses.replace(segment, channel=channel)
            for channel, result in enumerate(results)
            for segment in result.segments
        ),
        key=lambda s: (s.start, s.channel),
    )
    main = max(
        results,
        key=lambda r: (r.language is not None, _spoken_s(r.segments), r.language_probability or 0),
    )
    return dataclasses.replace(
        main,
        segments=segments,
        audio_duration_s=max(r.audio_duration_s for r in results),
        processing_s=processing_s,
        windows=sum(r.windows for r in results),
        speech_s=_sum_known([r.speech_s for r in results]),
        covered_speech_s=_sum_known([r.covered_speech_s for r in results]),
    )


def _spoken_s(segments: Sequence[Segment]) -> float:
    return sum(max(0.0, s.end - s.start) for s in segments)


def _sum_known(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if len(known) == len(values) else None
