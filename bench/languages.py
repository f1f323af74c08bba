#!/usr/bin/env python
"""Per language: the pipeline's transcriber against plain faster-whisper, same model, same files.

Run from the repository root:

    .venv/bin/python bench/languages.py            # 3 rounds
    .venv/bin/python bench/languages.py --quick    # 1 round

For every fixture language (en = jfk.flac; de, es, fr, pt, vi = the espeak-ng
files in tests/data) and for multilingual.mp3 (English, then German), both sides
get the file's path and decode it themselves, with no language given:

- plain: ``WhisperModel(resolve_model(asr.model), device="cpu",
  compute_type="int8").transcribe(path, beam_size=5, vad_filter=True)``, every
  segment consumed;
- pipeline: ``workers.asr.build_transcriber(AsrSettings(model=asr.model,
  device="cpu", compute_type="int8", beam_size=5, vad_filter=True))``'s
  ``transcribe(path)``, the worker's own code path.

Model loads and one warm-up run of each side are excluded; the order of the two
sides alternates from one pair to the next. Word error rate (jiwer) is measured
on text lower-cased with punctuation stripped (numbers stay as written, so "zehn"
heard as "10" counts as an error on both sides alike). A language where the
pipeline's WER exceeds plain's by more than 0.01 is flagged.

For multilingual.mp3: the languages each side wrote (seconds of segments per
language) and how much of the speech found by faster-whisper's Silero VAD
(default options, no padding; the same yardstick for both sides) the segments
cover.

Output: a Markdown table on stdout; ``bench/results/languages-<stamp>.{md,json}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import RESULTS, log, machine_info, run_and_report  # noqa: E402
from bench.sysload import CpuWindow  # noqa: E402
from pipeline.config import AsrSettings, load_settings  # noqa: E402
from pipeline.media import decode_mono_16k  # noqa: E402
from pipeline.metrics import Metrics  # noqa: E402
from pipeline.models import resolve_model  # noqa: E402
from tests.e2e.harness import normalise  # noqa: E402
from workers.asr import LongAudioTranscriber, build_transcriber  # noqa: E402
from workers.coverage import Interval, merged, overlap_s  # noqa: E402

DATA = REPO / "tests" / "data"
BEAM_SIZE = 5
WER_TOLERANCE = 0.01
MIXED = "multilingual.mp3"
SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Fixture:
    language: str
    file: str
    reference: str


# References: tests/data/README.md.
FIXTURES = (
    Fixture(
        "en",
        "jfk.flac",
        "And so my fellow Americans, ask not what your country can do for you,"
        " ask what you can do for your country.",
    ),
    Fixture(
        "de",
        "speech_de.flac",
        "Guten Morgen. Heute ist das Wetter in Berlin sonnig und warm. Wir treffen uns um"
        " zehn Uhr am Bahnhof und fahren dann gemeinsam zur Arbeit.",
    ),
    Fixture(
        "es",
        "speech_es.flac",
        "Buenos días. Hoy el tiempo en Madrid es soleado y cálido. Nos vemos a las diez en"
        " la estación y después vamos juntos al trabajo.",
    ),
    Fixture(
        "fr",
        "speech_fr.flac",
        "Bonjour à tous. Aujourd'hui, il fait beau et chaud à Paris. Nous nous retrouvons à"
        " dix heures à la gare, puis nous allons ensemble au travail.",
    ),
    Fixture(
        "pt",
        "speech_pt.flac",
        "Bom dia a todos. Hoje o tempo em Lisboa está ensolarado e quente. Encontramo-nos às"
        " dez horas na estação e depois vamos juntos para o trabalho.",
    ),
    Fixture(
        "vi",
        "speech_vi.flac",
        "Xin chào các bạn. Hôm nay thời tiết ở Hà Nội rất đẹp và ấm áp. Chúng ta gặp nhau"
        " lúc mười giờ ở nhà ga rồi cùng nhau đi làm.",
    ),
)


@dataclass(frozen=True)
class Heard:
    """One side's result for one file, in the shape both sides share."""

    text: str
    language: str | None
    probability: float | None
    segments: list[tuple[float, float, str | None]]  # start, end, language
    seconds: float
    foreign_cores: float
    extra: dict[str, Any]


Side = Callable[[Path], Heard]


# -- the two sides -----------------------------------------------------------------------


def plain_side(model_path: str) -> tuple[Side, float]:
    from faster_whisper import WhisperModel

    started = time.perf_counter()
    model = WhisperModel(model_path, device="cpu", compute_type="int8")
    load_s = time.perf_counter() - started

    def run(path: Path) -> Heard:
        window = CpuWindow(own_pids).start()
        started = time.perf_counter()
        pieces, info = model.transcribe(str(path), beam_size=BEAM_SIZE, vad_filter=True)
        segments = list(pieces)
        seconds = time.perf_counter() - started
        foreign = window.stop()["foreign_cores"]
        return Heard(
            text=" ".join(s.text.strip() for s in segments),
            language=info.language,
            probability=info.language_probability,
            # Plain faster-whisper writes the whole file in the one language it detected.
            segments=[(s.start, s.end, info.language) for s in segments],
            seconds=seconds,
            foreign_cores=foreign,
            extra={},
        )

    return run, load_s


def pipeline_side(model: str) -> tuple[Side, float]:
    settings = AsrSettings(
        model=model, device="cpu", compute_type="int8", beam_size=BEAM_SIZE, vad_filter=True
    )
    transcriber: LongAudioTranscriber = build_transcriber(settings, metrics=Metrics())
    started = time.perf_counter()
    transcriber.load()
    load_s = time.perf_counter() - started

    def run(path: Path) -> Heard:
        window = CpuWindow(own_pids).start()
        started = time.perf_counter()
        result = transcriber.transcribe(path, threading.Event())
        seconds = time.perf_counter() - started
        foreign = window.stop()["foreign_cores"]
        return Heard(
            text=result.text,
            language=result.language,
            probability=result.language_probability,
            segments=[(s.start, s.end, s.language) for s in result.segments],
            seconds=seconds,
            foreign_cores=foreign,
            extra={
                "processing_s": result.processing_s,
                "windows": result.windows,
                "own_speech_s": result.speech_s,
                "own_covered_speech_s": result.covered_speech_s,
                "detected_language": result.detected_language,
                "detected_language_probability": result.detected_language_probability,
            },
        )

    return run, load_s


def own_pids() -> list[int]:
    return [os.getpid()]


# -- measures ------------------------------------------------------------------------------


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    hyp = normalise(hypothesis)
    if not hyp:
        return 1.0
    return float(jiwer.wer(normalise(reference), hyp))


@dataclass(frozen=True)
class Audio:
    duration_s: float
    speech: list[Interval]

    @property
    def speech_s(self) -> float:
        return sum(e - s for s, e in self.speech)


def audio_facts(path: Path) -> Audio:
    """Duration and the speech Silero VAD finds (unpadded): the yardstick for coverage."""
    with path.open("rb") as f:
        samples = decode_mono_16k(f)
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    spans = get_speech_timestamps(samples, VadOptions(speech_pad_ms=0), sampling_rate=SAMPLE_RATE)
    speech = merged((s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in spans)
    return Audio(duration_s=samples.size / SAMPLE_RATE, speech=speech)


def languages_written(heard: Heard) -> dict[str, float]:
    """Seconds of segments per language, longest first."""
    per: dict[str, float] = defaultdict(float)
    for start, end, language in heard.segments:
        per[language or "?"] += end - start
    return dict(sorted(((k, round(v, 1)) for k, v in per.items()), key=lambda kv: -kv[1]))


def coverage(heard: Heard, audio: Audio) -> dict[str, Any]:
    covered = overlap_s(audio.speech, ((s, e) for s, e, _ in heard.segments))
    return {
        "speech_s": round(audio.speech_s, 2),
        "covered_speech_s": round(covered, 2),
        "coverage": round(covered / audio.speech_s, 3) if audio.speech_s else None,
        "last_segment_end_s": round(max((e for _, e, _ in heard.segments), default=0.0), 2),
        "segments": len(heard.segments),
    }


# -- the run ---------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rounds = 1 if args.quick else args.rounds
    machine = machine_info()  # the commit and the tree as they were when the code was loaded
    model_path = resolve_model(args.model)
    log(f"model {args.model} at {model_path}; {rounds} round(s)")
    plain, plain_load_s = plain_side(model_path)
    pipeline, pipeline_load_s = pipeline_side(args.model)
    sides: dict[str, Side] = {"plain": plain, "pipeline": pipeline}
    warm = DATA / FIXTURES[0].file
    for run_side in sides.values():  # excluded: first-call costs
        run_side(warm)

    files = [f.file for f in FIXTURES] + [MIXED]
    audio = {name: audio_facts(DATA / name) for name in files}
    heard: dict[str, dict[str, list[Heard]]] = {n: {"plain": [], "pipeline": []} for n in files}
    pair = 0
    for r in range(rounds):
        for name in files:
            order = ["plain", "pipeline"] if pair % 2 == 0 else ["pipeline", "plain"]
            pair += 1
            for side in order:
                result = sides[side](DATA / name)
                heard[name][side].append(result)
                log(
                    f"round {r + 1} {name} {side}: {result.seconds:.2f} s,"
                    f" {result.language} ({result.probability or 0:.2f})"
                )

    rows = [language_row(f, audio[f.file], heard[f.file]) for f in FIXTURES]
    mixed = {side: mixed_row(audio[MIXED], heard[MIXED][side]) for side in sides}
    return {
        "machine": machine,
        "commit": machine["git_commit"],
        "config": {
            "model": args.model,
            "model_path": model_path,
            "device": "cpu",
            "compute_type": "int8",
            "beam_size": BEAM_SIZE,
            "vad_filter": True,
            "language": None,
            "rounds": rounds,
            "wer_tolerance": WER_TOLERANCE,
        },
        "model_load_s": {"plain": round(plain_load_s, 2), "pipeline": round(pipeline_load_s, 2)},
        "languages": rows,
        "flagged": [r["language"] for r in rows if r["flagged"]],
        "multilingual": {"file": MIXED, "duration_s": round(audio[MIXED].duration_s, 2), **mixed},
    }


def side_summary(runs: list[Heard], audio: Audio, reference: str | None) -> dict[str, Any]:
    first = runs[0]
    seconds = statistics.median(h.seconds for h in runs)
    summary: dict[str, Any] = {
        "text": first.text,
        "same_text_every_round": all(h.text == first.text for h in runs),
        "language": first.language,
        "probability": round(first.probability, 3) if first.probability is not None else None,
        "seconds_median": round(seconds, 3),
        "rtf": round(seconds / audio.duration_s, 4),
        "seconds_each_round": [round(h.seconds, 3) for h in runs],
        "max_foreign_cores": max(h.foreign_cores for h in runs),
        **first.extra,
    }
    if reference is not None:
        summary["wer"] = round(wer(reference, first.text), 4)
    return summary


def language_row(fixture: Fixture, audio: Audio, runs: dict[str, list[Heard]]) -> dict[str, Any]:
    plain = side_summary(runs["plain"], audio, fixture.reference)
    ours = side_summary(runs["pipeline"], audio, fixture.reference)
    delta = round(ours["wer"] - plain["wer"], 4)
    return {
        "language": fixture.language,
        "file": fixture.file,
        "audio_s": round(audio.duration_s, 2),
        "reference": fixture.reference,
        "plain": plain,
        "pipeline": ours,
        "wer_delta": delta,
        "flagged": delta > WER_TOLERANCE,
    }


def mixed_row(audio: Audio, runs: list[Heard]) -> dict[str, Any]:
    return {
        **side_summary(runs, audio, None),
        "languages_written_s": languages_written(runs[0]),
        **coverage(runs[0], audio),
    }


# -- the report --------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    lines = [
        f"Languages: model {config['model']}, CPU int8, beam {config['beam_size']}, VAD on,"
        f" no language given; {config['rounds']} round(s), commit {report['commit']},"
        f" {report['machine']['started']}.",
        "",
        "| language | file | audio s | plain WER | pipeline WER | Δ WER (pipeline − plain)"
        " | plain detected (p) | pipeline detected (p) | plain RTF | pipeline RTF | flag |",
        "|---|---|---:|---:|---:|---:|---|---|---:|---:|---|",
    ]
    for row in report["languages"]:
        plain, ours = row["plain"], row["pipeline"]
        flag = f"**worse by > {WER_TOLERANCE}**" if row["flagged"] else "ok"
        lines.append(
            f"| {row['language']} | {row['file']} | {row['audio_s']:.1f} | {plain['wer']:.3f}"
            f" | {ours['wer']:.3f} | {row['wer_delta']:+.3f} | {_detected(plain)}"
            f" | {_detected(ours)} | {plain['rtf']:.3f} | {ours['rtf']:.3f} | {flag} |"
        )
    mixed = report["multilingual"]
    lines += [
        "",
        f"{mixed['file']} ({mixed['duration_s']:.1f} s, English then German):",
        "",
        "| side | language (p) | languages written (s of segments) | speech s (VAD)"
        " | covered s | coverage | last segment ends s | segments | RTF |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for side in ("plain", "pipeline"):
        m = mixed[side]
        written = ", ".join(f"{k} {v:.1f}" for k, v in m["languages_written_s"].items())
        coverage_text = f"{m['coverage']:.0%}" if m["coverage"] is not None else "–"
        lines.append(
            f"| {side} | {_detected(m)} | {written or '–'} | {m['speech_s']:.1f}"
            f" | {m['covered_speech_s']:.1f} | {coverage_text} | {m['last_segment_end_s']:.1f}"
            f" | {m['segments']} | {m['rtf']:.3f} |"
        )
    flagged = report["flagged"]
    lines += [
        "",
        "Flagged (pipeline worse than plain by more than"
        f" {WER_TOLERANCE} WER): {', '.join(flagged) if flagged else 'none'}.",
    ]
    return "\n".join(lines) + "\n"


def _detected(side: dict[str, Any]) -> str:
    p = side["probability"]
    return f"{side['language']} ({p:.2f})" if p is not None else str(side["language"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument(
        "--model",
        default=None,
        help="base, tiny.en or a CTranslate2 directory (default: asr.model of the settings)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.model = args.model or load_settings().asr.model
    return run_and_report("languages", args, measure, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
