"""Which language each stretch of speech in a window is in, and the runs to transcribe.

Whisper transcribes a whole call in one language: the one it hears first. A file
that changes language (an interview in English then German) comes back with its
second half in the wrong language, or translated. So, when no language is asked
for, the speech VAD found in a window is cut into pieces of up to 30 s (at pauses,
one detection each: what Whisper hears at once), and each piece's language is
detected. Where two neighbouring pieces disagree, the change lies near where they
meet, inside one of them or between: each is split in two at a pause and the
half next to the other detected again (the far half keeps the piece's majority),
down to pieces of a few seconds. A piece detection is unsure of (a change inside
it may hide behind its majority) is split once too, both halves detected, and
further only if they disagree. So extra detections are spent only where the
language changes or is in doubt. Consecutive pieces in the same language become
one run; a run with too little speech, or too unsure a detection, to trust joins
its neighbour; and each run is transcribed on its own, in its language, from the
middle of the pause before it to the middle of the pause after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from workers.engines import LanguageGuess
from workers.windows import SAMPLE_RATE, Span

# Whisper hears 30 s at a time: one detection per piece of audio up to this long.
PIECE_S = 30.0
# A piece is split to find where the language changes only into halves this long.
MIN_PIECE_S = 3.0
# A run with less speech than this is too short to trust its language alone.
MIN_RUN_S = 3.0
# A piece detected with less confidence than this may hold a change of language.
SURE = 0.8
# A run in another language than its neighbours needs detection at least this sure.
MIN_RUN_PROBABILITY = 0.6

# The language of the audio from the first span's start to the last one's end.
Detect = Callable[[Sequence[Span]], LanguageGuess]


@dataclass(frozen=True, slots=True)
class Heard:
    """A piece of speech (spans in a window) and the language detected in it.

    ``settled``: the piece is a half whose language agreed with its sibling's and its
    parent's: however unsure, it is split again only if a neighbour disagrees.
    ``whole``: splitting it found no language sure enough to move a boundary to; it
    is not split again.
    """

    spans: tuple[Span, ...]
    guess: LanguageGuess
    settled: bool = False
    whole: bool = False

    @property
    def language(self) -> str:
        return self.guess.language

    @property
    def speech(self) -> int:
        return sum(end - start for start, end in self.spans)


@dataclass(frozen=True, slots=True)
class Run:
    """Samples ``start:end`` of a window, to be transcribed in ``language``.

    ``speech_s``: how much speech VAD found in it; ``probability``: how sure detection
    was of ``language`` there (weighted by speech), None when nothing detected it.
    """

    start: int
    end: int
    language: str | None
    probability: float | None
    speech_s: float


def pieces(spans: Sequence[Span], *, max_samples: int) -> list[tuple[Span, ...]]:
    """Consecutive spans grouped into pieces at most ``max_samples`` long, first to last.

    A span longer than that (speech without a pause) is cut into pieces of its own.
    """
    out: list[tuple[Span, ...]] = []
    current: list[Span] = []
    for start, end in spans:
        while end - start > max_samples:
            if current:
                out.append(tuple(current))
                current = []
            out.append(((start, start + max_samples),))
            start += max_samples
        if current and end - current[0][0] > max_samples:
            out.append(tuple(current))
            current = []
        current.append((start, end))
    if current:
        out.append(tuple(current))
    return out


def halves(spans: tuple[Span, ...], *, min_samples: int) -> tuple[tuple[Span, ...], ...] | None:
    """``spans`` split at the pause that halves their speech most evenly.

    None when there is no pause, or either half would be shorter than ``min_samples``.
    """
    if len(spans) < 2:
        return None
    sizes = [end - start for start, end in spans]
    total = sum(sizes)
    best_k, best_gap = 0, total
    running = 0
    for k in range(1, len(spans)):
        running += sizes[k - 1]
        if abs(total - 2 * running) < best_gap:
            best_k, best_gap = k, abs(total - 2 * running)
    first = sum(sizes[:best_k])
    if min(first, total - first) < min_samples:
        return None
    return spans[:best_k], spans[best_k:]


def detect_pieces(
    spans: Sequence[Span],
    detect: Detect,
    *,
    max_samples: int = round(PIECE_S * SAMPLE_RATE),
    min_samples: int = round(MIN_PIECE_S * SAMPLE_RATE),
    sure: float = SURE,
    min_probability: float = MIN_RUN_PROBABILITY,
) -> list[Heard]:
    """The language of each piece of ``spans``, refined where it changes or is in doubt."""
    heard = [Heard(piece, detect(piece)) for piece in pieces(spans, max_samples=max_samples)]
    while True:
        split: dict[int, tuple[tuple[Span, ...], ...]] = {}
        for index, piece in enumerate(heard):
            unsure = not piece.settled and piece.guess.probability < sure
            if piece.whole or (not unsure and not _disagrees(heard, index)):
                continue
            two = halves(piece.spans, min_samples=min_samples)
            if two is not None:
                split[index] = two
        if not split:
            return heard
        refined: list[Heard] = []
        for index, piece in enumerate(heard):
            if index in split:
                sides = _sides(heard, index, sure)
                refined += _split(piece, split[index], detect, sides, min_probability)
            else:
                refined.append(piece)
        heard = refined


def _sides(heard: Sequence[Heard], index: int, sure: float) -> tuple[bool, bool]:
    """Which halves of ``heard[index]`` to detect: (first, second).

    Doubt about the piece itself needs both. A neighbour that disagrees needs only the
    half next to it: with at most one change in the piece, the far half holds its
    majority, the language the piece was detected in.
    """
    piece = heard[index]
    if not piece.settled and piece.guess.probability < sure:
        return True, True
    language = piece.language
    return (
        index > 0 and heard[index - 1].language != language,
        index + 1 < len(heard) and heard[index + 1].language != language,
    )


def _split(
    piece: Heard,
    two: tuple[tuple[Span, ...], ...],
    detect: Detect,
    sides: tuple[bool, bool],
    min_probability: float,
) -> list[Heard]:
    guesses = [detect(half) if side else piece.guess for half, side in zip(two, sides, strict=True)]
    # Less audio, less certainty: a half heard in another language moves the boundary
    # only when detection is sure of it; otherwise the piece stays as it was heard.
    if any(g.language != piece.language and g.probability < min_probability for g in guesses):
        return [Heard(piece.spans, piece.guess, settled=True, whole=True)]
    # Halves that agree with their piece leave no doubt about it (nor does an inherited one).
    agree = all(guess.language == piece.language for guess in guesses)
    return [
        Heard(half, guess, settled=agree or not side)
        for half, guess, side in zip(two, guesses, sides, strict=True)
    ]


def _disagrees(heard: Sequence[Heard], index: int) -> bool:
    language = heard[index].language
    return (index > 0 and heard[index - 1].language != language) or (
        index + 1 < len(heard) and heard[index + 1].language != language
    )


def runs(
    heard: Sequence[Heard],
    size: int,
    *,
    min_run_samples: int = round(MIN_RUN_S * SAMPLE_RATE),
    min_probability: float = MIN_RUN_PROBABILITY,
) -> list[Run]:
    """``heard`` as runs of one language that together cover samples ``0:size``.

    A run too short, or detected too unsurely, to stand on its own joins the neighbour
    with more evidence (speech times probability), in its language; the run with the
    least evidence first, one at a time. Speech whose language detection cannot tell
    apart (Portuguese or Galician) thus stays in one language, as Whisper alone would
    transcribe it.
    """
    groups = _grouped([[piece] for piece in heard])
    while len(groups) > 1:
        speech = [sum(p.speech for p in group) for group in groups]
        sure = [_probability(group) for group in groups]
        evidence = [s * p for s, p in zip(speech, sure, strict=True)]
        doubtful = [
            i
            for i in range(len(groups))
            if speech[i] < min_run_samples or sure[i] < min_probability
        ]
        if not doubtful:
            break
        weakest = min(doubtful, key=lambda i: evidence[i])
        neighbours = [i for i in (weakest - 1, weakest + 1) if 0 <= i < len(groups)]
        into = max(neighbours, key=lambda i: evidence[i])
        language = groups[into][0].language
        groups[weakest] = [_as(piece, language) for piece in groups[weakest]]
        groups = _grouped(groups)
    out: list[Run] = []
    for number, group in enumerate(groups):
        start = 0 if number == 0 else _middle_of_pause(groups[number - 1], group)
        end = size if number == len(groups) - 1 else _middle_of_pause(group, groups[number + 1])
        out.append(_run(group, start, end))
    return out


def _probability(group: Sequence[Heard]) -> float:
    """How sure detection was of the group's language, weighted by speech."""
    speech = sum(piece.speech for piece in group)
    return sum(piece.guess.probability * piece.speech for piece in group) / speech


def _grouped(groups: list[list[Heard]]) -> list[list[Heard]]:
    """Neighbouring groups in the same language merged."""
    out: list[list[Heard]] = []
    for group in groups:
        if out and out[-1][0].language == group[0].language:
            out[-1] = out[-1] + group
        else:
            out.append(list(group))
    return out


def _as(piece: Heard, language: str) -> Heard:
    """``piece`` taken to be in ``language``; its guess keeps what the model said."""
    guess = LanguageGuess(
        language=language,
        probability=piece.guess.probability_of(language) or 0.0,
        probabilities=piece.guess.probabilities,
    )
    return Heard(piece.spans, guess, piece.settled)


def _middle_of_pause(before: Sequence[Heard], after: Sequence[Heard]) -> int:
    return (before[-1].spans[-1][1] + after[0].spans[0][0]) // 2


def _run(group: Sequence[Heard], start: int, end: int) -> Run:
    return Run(
        start=start,
        end=end,
        language=group[0].language,
        probability=_probability(group),
        speech_s=sum(piece.speech for piece in group) / SAMPLE_RATE,
    )


@dataclass(slots=True)
class LanguageTally:
    """Speech time per language over a file, and how sure detection was of each."""

    _speech: dict[str, float] = field(default_factory=dict)
    # probability x speech, for runs whose probability is known; and the speech they hold
    _sure: dict[str, float] = field(default_factory=dict)
    _weighed: dict[str, float] = field(default_factory=dict)

    def add(self, language: str, speech_s: float, probability: float | None) -> None:
        self._speech[language] = self._speech.get(language, 0.0) + speech_s
        if probability is not None:
            self._sure[language] = self._sure.get(language, 0.0) + probability * speech_s
            self._weighed[language] = self._weighed.get(language, 0.0) + speech_s

    def main(self) -> tuple[str | None, float | None]:
        """The language with the most speech, and its speech-weighted probability."""
        if not self._speech:
            return None, None
        language = max(self._speech, key=lambda code: self._speech[code])
        weighed = self._weighed.get(language, 0.0)
        if weighed <= 0:
            return language, None
        return language, self._sure[language] / weighed

    @property
    def languages(self) -> dict[str, float]:
        """Seconds of speech per language."""
        return dict(self._speech)
