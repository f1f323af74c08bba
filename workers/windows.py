"""Cutting long audio into windows that end at silences.

A 3-hour file decoded at once is 690 MB of float32 samples before the model
has seen any of it. Long files are instead decoded as a stream and handed to
the model window by window; each window ends at the longest pause that VAD
finds near its nominal end, so no word is cut in two, and the caller shifts
each window's timestamps by its offset.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000
Samples = npt.NDArray[np.float32]
CutFinder = Callable[[Samples], int]
# Stretches of speech in some samples: sorted, non-overlapping (start, end) sample offsets.
Span = tuple[int, int]
SpeechFinder = Callable[[Samples], list[Span]]

# Pauses shorter than this are breaths inside a sentence, not places to cut.
MIN_PAUSE_MS = 250
# Pauses this long end a stretch of speech: between sentences, or where speakers change.
SPEECH_PAUSE_MS = 500
_ENERGY_FRAME = SAMPLE_RATE // 50  # 20 ms


@dataclass(frozen=True, slots=True)
class Window:
    offset_s: float
    samples: Samples
    last: bool

    @property
    def duration_s(self) -> float:
        return self.samples.size / SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """``whole_up_to_s``: audio up to this long is one window (decoded at once)."""

    whole_up_to_s: float
    window_s: float
    search_s: float

    def is_long(self, claimed_duration_s: float | None) -> bool:
        """Window from the start when the container says (or cannot say) the file is long."""
        return claimed_duration_s is None or claimed_duration_s > self.whole_up_to_s


class _SampleBuffer:
    """Decoded chunks not yet handed out, kept as a list to avoid repeated copying."""

    def __init__(self) -> None:
        self._chunks: deque[Samples] = deque()
        self.size = 0

    def append(self, chunk: Samples) -> None:
        if chunk.size:
            self._chunks.append(chunk)
            self.size += chunk.size

    def push_front(self, chunk: Samples) -> None:
        if chunk.size:
            self._chunks.appendleft(chunk)
            self.size += chunk.size

    def take(self, count: int) -> Samples:
        """Remove and return the first ``count`` samples (fewer if fewer are held)."""
        parts: list[Samples] = []
        needed = count
        while needed > 0 and self._chunks:
            chunk = self._chunks.popleft()
            if chunk.size > needed:
                self._chunks.appendleft(chunk[needed:])
                chunk = chunk[:needed]
            parts.append(chunk)
            needed -= chunk.size
        taken = int(sum(p.size for p in parts))
        self.size -= taken
        if not parts:
            return np.zeros(0, dtype=np.float32)
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)


def split_at_silences(
    chunks: Iterable[Samples],
    plan: WindowPlan,
    find_cut: CutFinder,
    *,
    long_from_start: bool,
) -> Iterator[Window]:
    """Yield the audio of ``chunks`` as one window, or as windows ending at pauses.

    With ``long_from_start`` false the audio is collected whole, unless it grows past
    ``plan.whole_up_to_s`` (a container that understated its length): then it is
    windowed from there on, so memory stays bounded whatever the file claims.
    """
    window = round(plan.window_s * SAMPLE_RATE)
    search = min(round(plan.search_s * SAMPLE_RATE), window // 2)
    whole_limit = round(plan.whole_up_to_s * SAMPLE_RATE)
    buffer = _SampleBuffer()
    windowed = long_from_start
    emitted = 0
    for chunk in chunks:
        buffer.append(chunk)
        if not windowed and buffer.size > whole_limit:
            windowed = True
        while windowed and buffer.size > window:
            samples = buffer.take(window)
            cut = window - search + find_cut(samples[window - search :])
            # Copy the short remainder, so the window's big array dies with the window.
            buffer.push_front(samples[cut:].copy())
            head = samples[:cut]
            del samples
            yield Window(offset_s=emitted / SAMPLE_RATE, samples=head, last=False)
            emitted += cut
            del head
    rest = buffer.take(buffer.size)
    yield Window(offset_s=emitted / SAMPLE_RATE, samples=rest, last=True)


def vad_cut_finder(min_pause_ms: int = MIN_PAUSE_MS) -> CutFinder:
    """Cut in the middle of the longest pause VAD finds; the latest one on a tie."""

    find_speech = vad_speech_finder(min_pause_ms)

    def find_cut(region: Samples) -> int:
        return cut_from_speech(region, find_speech(region))

    return find_cut


def vad_speech_finder(min_pause_ms: int = SPEECH_PAUSE_MS) -> SpeechFinder:
    """Silero VAD (from faster-whisper): speech spans, split at pauses of ``min_pause_ms``.

    Spans are not padded: they measure speech, not the context a decoder wants.
    """

    def find_speech(samples: Samples) -> list[Span]:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        options = VadOptions(min_silence_duration_ms=min_pause_ms, speech_pad_ms=0)
        speech = get_speech_timestamps(samples, options, sampling_rate=SAMPLE_RATE)
        return [(int(s["start"]), int(s["end"])) for s in speech]

    return find_speech


def cut_from_speech(region: Samples, speech: list[Span]) -> int:
    """The cut point in ``region`` given its speech spans (sample offsets, sorted)."""
    if not speech:
        return region.size  # no speech at all: the window can end where it is
    gaps: list[tuple[int, int]] = []
    previous_end = 0
    for start, end in speech:
        gaps.append((previous_end, start))
        previous_end = max(previous_end, end)
    gaps.append((previous_end, region.size))
    best_start, best_end = max(gaps, key=lambda g: (g[1] - g[0], g[0]))
    if best_end - best_start >= MIN_PAUSE_MS * SAMPLE_RATE // 1000:
        return (best_start + best_end) // 2
    return quietest_frame(region)


def quietest_frame(region: Samples) -> int:
    """Speech throughout: cut at the middle of the lowest-energy 20 ms frame."""
    frames = region.size // _ENERGY_FRAME
    if frames == 0:
        return region.size
    energy = np.square(region[: frames * _ENERGY_FRAME].reshape(frames, _ENERGY_FRAME)).mean(axis=1)
    return int(np.argmin(energy)) * _ENERGY_FRAME + _ENERGY_FRAME // 2
