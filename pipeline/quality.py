"""How sure a transcript is: its figures and a verdict, ``ok`` or ``review`` with reasons.

A pure function of what the worker knows when a transcription ends (segments,
language detection, the language the source expected, speech time found by VAD and
how much of it the segments cover) and the ``quality`` settings. Transcripts in
``review`` stay visible (``ls``, ``show``, the API) but never enter a dataset version.

The figures, each ``None`` when nothing measured it:

* ``language_probability``: how sure language detection was of the transcript's
  language (with a requested language forced on the model: the probability detection
  gave the requested language), and ``detected_language`` with its
  ``detected_language_probability``: what detection heard besides a requested language;
* ``mean_logprob``: the segments' ``avg_logprob``, weighted by segment duration;
* ``compression_ratio``: the segments' gzip compression ratio, weighted by duration
  (Whisper stuck in a loop writes text that compresses far too well);
* ``no_speech_ratio``: the segments' ``no_speech_prob``, weighted by duration, i.e. the
  expected share of transcribed time that is not speech. A weighted mean rather than
  the share of time above a cut-off: Whisper's probability is per 30 s window, so a
  cut-off would turn whole windows on and off at one threshold and need a second one;
* ``coverage``: speech time covered by segments divided by speech time found by VAD
  (``None`` when VAD found no speech or did not run).

Each reason is a short sentence with its figure and the limit it crossed, e.g.
``incomplete: segments cover 53% of 55.1 s of speech (< 80%)``; its ``kind`` is a
stable code for metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from pipeline.config import QualitySettings

Verdict = Literal["ok", "review"]
OK: Verdict = "ok"
REVIEW: Verdict = "review"

ReasonKind = Literal[
    "no_speech",
    "incomplete",
    "language_mismatch",
    "language_confidence",
    "repetition",
    "low_confidence",
]
REASON_KINDS: tuple[ReasonKind, ...] = get_args(ReasonKind)

NO_SPEECH = "no speech detected"
# Whisper looping on one line writes it over and over as separate segments, each of
# which compresses normally; this many identical segments in a row is a loop.
REPEATED_SEGMENTS = 5


class SegmentFigures(Protocol):
    """What quality reads of a segment (``workers.transcription.Segment`` has it all)."""

    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def text(self) -> str: ...
    @property
    def avg_logprob(self) -> float | None: ...
    @property
    def compression_ratio(self) -> float | None: ...
    @property
    def no_speech_prob(self) -> float | None: ...
    @property
    def language(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Reason:
    kind: ReasonKind
    text: str


@dataclass(frozen=True, slots=True)
class Quality:
    verdict: Verdict
    reasons: tuple[Reason, ...]
    language_probability: float | None
    mean_logprob: float | None
    compression_ratio: float | None
    no_speech_ratio: float | None
    coverage: float | None
    speech_s: float | None
    covered_speech_s: float | None
    # What detection heard besides a requested language (None: it did not run apart).
    detected_language: str | None = None
    detected_language_probability: float | None = None

    @property
    def reason_texts(self) -> list[str]:
        return [r.text for r in self.reasons]

    def figures(self) -> dict[str, Any]:
        """The figures behind the verdict, rounded, as the transcript JSON holds them."""
        return {
            "language_probability": _rounded(self.language_probability),
            "detected_language": self.detected_language,
            "detected_language_probability": _rounded(self.detected_language_probability),
            "mean_logprob": _rounded(self.mean_logprob),
            "compression_ratio": _rounded(self.compression_ratio),
            "no_speech_ratio": _rounded(self.no_speech_ratio),
            "coverage": _rounded(self.coverage),
            "speech_s": _rounded(self.speech_s),
            "covered_speech_s": _rounded(self.covered_speech_s),
        }


def assess(
    segments: Sequence[SegmentFigures],
    *,
    language: str | None,
    language_probability: float | None,
    expected_language: str | None,
    speech_s: float | None,
    covered_speech_s: float | None,
    settings: QualitySettings,
    detected_language: str | None = None,
    detected_language_probability: float | None = None,
) -> Quality:
    """The figures and verdict of one transcript.

    ``language``/``language_probability`` are the transcript's; ``detected_language``
    and its probability are what detection found when a requested language was forced
    on the model (``None`` when detection did not run separately). ``expected_language``
    is the language the source asked for.
    """
    heard: str | None = language
    heard_p: float | None = language_probability
    if detected_language is not None:
        heard, heard_p = detected_language, detected_language_probability
    coverage = _coverage(speech_s, covered_speech_s)
    spoken = [s for s in segments if s.text.strip()]
    mean_logprob = _weighted(spoken, lambda s: s.avg_logprob)
    compression_ratio = _weighted(spoken, lambda s: s.compression_ratio)
    no_speech_ratio = _weighted(spoken, lambda s: s.no_speech_prob)
    reasons = _reasons(
        spoken,
        heard=heard,
        heard_p=heard_p,
        expected=expected_language,
        expected_p=_probability_of_expected(
            expected_language, language, language_probability, detected_language
        ),
        coverage=coverage,
        speech_s=speech_s,
        mean_logprob=mean_logprob,
        compression_ratio=compression_ratio,
        no_speech_ratio=no_speech_ratio,
        settings=settings,
    )
    return Quality(
        verdict=REVIEW if reasons else OK,
        reasons=tuple(reasons),
        language_probability=language_probability,
        mean_logprob=mean_logprob,
        compression_ratio=compression_ratio,
        no_speech_ratio=no_speech_ratio,
        coverage=coverage,
        speech_s=speech_s,
        covered_speech_s=covered_speech_s,
        detected_language=detected_language,
        detected_language_probability=detected_language_probability,
    )


def _reasons(
    spoken: Sequence[SegmentFigures],
    *,
    heard: str | None,
    heard_p: float | None,
    expected: str | None,
    expected_p: float | None,
    coverage: float | None,
    speech_s: float | None,
    mean_logprob: float | None,
    compression_ratio: float | None,
    no_speech_ratio: float | None,
    settings: QualitySettings,
) -> list[Reason]:
    if not spoken:
        if speech_s and settings.min_coverage > 0:  # VAD heard speech; nothing was written
            return [_incomplete(0.0, speech_s, settings.min_coverage)]
        return [Reason("no_speech", NO_SPEECH)]
    if speech_s is not None and speech_s <= 0:
        return [Reason("no_speech", f"{NO_SPEECH} (yet {_count(len(spoken), 'segment')} of text)")]
    reasons: list[Reason] = []
    if coverage is not None and coverage < settings.min_coverage:
        assert speech_s is not None
        reasons.append(_incomplete(coverage, speech_s, settings.min_coverage))
    reasons += _language_reasons(spoken, heard, heard_p, expected, expected_p, settings)
    if compression_ratio is not None and compression_ratio > settings.max_compression_ratio:
        reasons.append(
            Reason(
                "repetition",
                "likely hallucination or repetition (compression ratio"
                f" {compression_ratio:.1f} > {settings.max_compression_ratio:.1f})",
            )
        )
    else:
        repeated = _longest_repeat(spoken)
        if repeated is not None:
            text, times = repeated
            reasons.append(
                Reason(
                    "repetition",
                    f"likely hallucination or repetition ({_quoted(text)} {times} times in a row)",
                )
            )
    if mean_logprob is not None and mean_logprob < settings.min_mean_logprob:
        reasons.append(
            Reason(
                "low_confidence",
                f"low confidence (mean log-prob {mean_logprob:.2f}"
                f" < {settings.min_mean_logprob:.2f})",
            )
        )
    if no_speech_ratio is not None and no_speech_ratio > settings.max_no_speech_ratio:
        reasons.append(
            Reason(
                "no_speech",
                f"likely no speech (no-speech ratio {no_speech_ratio:.2f}"
                f" > {settings.max_no_speech_ratio:.2f})",
            )
        )
    return reasons


def _probability_of_expected(
    expected: str | None,
    language: str | None,
    language_probability: float | None,
    detected_language: str | None,
) -> float | None:
    """How likely detection found the expected language, when that is known.

    With a requested language forced on the model and detection run besides it, the
    transcript's ``language`` is the requested one and its probability is what
    detection gave that language.
    """
    if expected and detected_language is not None and language:
        if same_language(language, expected):
            return language_probability
    return None


def _language_reasons(
    spoken: Sequence[SegmentFigures],
    heard: str | None,
    heard_p: float | None,
    expected: str | None,
    expected_p: float | None,
    settings: QualitySettings,
) -> list[Reason]:
    """A mismatch with the expected language, or (when none was expected) doubt.

    A requested language is the source's word for it, so low detection confidence alone
    is no reason when one was requested. Detection hearing another language is, when it
    is at least ``mismatch_probability`` sure of it, or (where the expected language's
    own probability is known) at least ``min_language_probability`` sure of it while
    giving the expected one less than that: German read as English is detected as
    ``de`` 0.76 with ``en`` at 0.03, and its English transcript is nonsense.
    """
    least = settings.min_language_probability
    if expected:
        if heard and heard_p is not None and not same_language(heard, expected):
            sure = heard_p >= settings.mismatch_probability
            preferred = expected_p is not None and heard_p >= least and expected_p < least
            if sure or preferred:
                shown = expected if expected_p is None else f"{expected} {expected_p:.2f}"
                return [
                    Reason(
                        "language_mismatch",
                        f"language differs from expected (detected {heard} {heard_p:.2f},"
                        f" expected {shown})",
                    )
                ]
        other, share = _other_language_share(spoken, expected)
        if other is not None and share > 0.5:
            return [
                Reason(
                    "language_mismatch",
                    f"language differs from expected (segments in {other} cover {share:.0%}"
                    f" of the text's time, expected {expected})",
                )
            ]
        return []
    if heard_p is not None and heard_p < least:
        return [
            Reason("language_confidence", f"low language confidence ({heard_p:.2f} < {least:.2f})")
        ]
    return []


def same_language(a: str, b: str) -> bool:
    """``de`` and ``de-AT`` (or ``DE``) are the same language for these checks."""
    return _base(a) == _base(b)


def _base(code: str) -> str:
    return code.strip().lower().replace("_", "-").split("-")[0]


def _incomplete(coverage: float, speech_s: float, min_coverage: float) -> Reason:
    return Reason(
        "incomplete",
        f"incomplete: segments cover {_percent(coverage)} of {speech_s:.1f} s of speech"
        f" (< {_percent(min_coverage)})",
    )


def _percent(value: float) -> str:
    # Rounded down, so that 79.6 % below an 80 % limit never reads "80% (< 80%)".
    return f"{int(value * 100 + 1e-9)}%"


def _coverage(speech_s: float | None, covered_s: float | None) -> float | None:
    if speech_s is None or covered_s is None or speech_s <= 0:
        return None
    return max(0.0, min(1.0, covered_s / speech_s))


def _weighted(
    segments: Iterable[SegmentFigures], value: Callable[[SegmentFigures], float | None]
) -> float | None:
    """The duration-weighted mean of ``value`` over segments that have one.

    Segments of no duration count equally when none has any.
    """
    pairs = [(max(s.end - s.start, 0.0), v) for s in segments if (v := value(s)) is not None]
    if not pairs:
        return None
    total = sum(w for w, _ in pairs)
    if total <= 0:
        return sum(v for _, v in pairs) / len(pairs)
    return sum(w * v for w, v in pairs) / total


def _other_language_share(
    spoken: Sequence[SegmentFigures], expected: str
) -> tuple[str | None, float]:
    """The most common other language of the segments and its share of their time."""
    time_by_language: dict[str, float] = {}
    total = 0.0
    for s in spoken:
        if s.language is None:
            continue
        length = max(s.end - s.start, 0.0)
        total += length
        if not same_language(s.language, expected):
            time_by_language[s.language] = time_by_language.get(s.language, 0.0) + length
    if not time_by_language or total <= 0:
        return None, 0.0
    other = max(time_by_language, key=lambda k: time_by_language[k])
    return other, sum(time_by_language.values()) / total


def _longest_repeat(spoken: Sequence[SegmentFigures]) -> tuple[str, int] | None:
    """The text repeated most often in consecutive segments, if at least ``REPEATED_SEGMENTS``."""
    best: tuple[str, int] | None = None
    run_text, run = "", 0
    for s in spoken:
        text = " ".join(s.text.lower().split())
        run = run + 1 if text == run_text else 1
        run_text = text
        if run >= REPEATED_SEGMENTS and (best is None or run > best[1]):
            best = (s.text.strip(), run)
    return best


def _quoted(text: str, limit: int = 40) -> str:
    short = text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
    return f'"{short}"'


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
