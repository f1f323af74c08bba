"""The worker's transcription against plain faster-whisper, sequential and batched.

Meant for a machine with an NVIDIA GPU (``--device cuda``, float16); on a CPU
(``--device cpu``, int8) it checks that the script works. Per side and round it
transcribes every file once and records processing time; the real-time factor
is total processing time over total audio time. GPU memory is sampled through
NVML at 20 Hz (the peak of the whole device while a side runs).

Sides, all on the same files, model and beam size, in alternating order:

- ``direct``: ``WhisperModel.transcribe(audio, vad_filter=True)``;
- ``direct-batched``: ``BatchedInferencePipeline.transcribe(audio, batch_size=B,
  without_timestamps=False)`` (what the worker asks for: segment timestamps);
- ``ai2text``: the worker's transcriber (``build_transcriber``) with ``batch_size=1``;
- ``ai2text-batched``: the same with ``batch_size=B``.

Every side is given the file's path and decodes it itself, as a user of plain
faster-whisper would, so every figure includes decoding.

    .venv/bin/python bench/gpu_worker.py --device cuda --rounds 3
    .venv/bin/python bench/gpu_worker.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.config import AsrSettings  # noqa: E402
from pipeline.media import decode_mono_16k  # noqa: E402
from pipeline.metrics import Metrics  # noqa: E402
from pipeline.models import DEFAULT_MODEL, resolve_model  # noqa: E402
from tests.e2e.harness import write_long_wav  # noqa: E402
from workers.asr import LongAudioTranscriber, build_transcriber  # noqa: E402
from workers.gpu import GpuMemoryProbe  # noqa: E402

DATA = REPO / "tests" / "data"
RESULTS = REPO / "bench" / "results"


@dataclass
class PeakGpuMemory:
    """Samples device memory in a thread; ``peak`` is the highest reading."""

    probe: GpuMemoryProbe | None
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PeakGpuMemory:
        if self.probe is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self) -> None:
        assert self.probe is not None
        while not self._stop.wait(0.05):
            reading = self.probe.read()
            if reading is not None:
                self.peak = max(self.peak, reading.used_bytes)


def build_files(workdir: Path, quick: bool) -> list[Path]:
    files = [DATA / "jfk.flac", DATA / "multilingual.mp3"]
    long = workdir / "multilingual-x10.wav"
    write_long_wav(long, DATA / "multilingual.mp3", 2 if quick else 10)
    return [*files, long]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round, shorter files")
    parser.add_argument("--model", default=None, help="model name or CTranslate2 dir (base)")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    cuda = args.device.startswith("cuda")
    compute_type = "float16" if cuda else "int8"
    model_path = resolve_model(args.model or DEFAULT_MODEL)

    from faster_whisper import BatchedInferencePipeline, WhisperModel

    device, _, index = args.device.partition(":")
    device_index = int(index or 0)
    model = WhisperModel(
        model_path, device=device, device_index=device_index, compute_type=compute_type
    )
    batched = BatchedInferencePipeline(model)

    def worker_transcriber(batch_size: int) -> LongAudioTranscriber:
        settings = AsrSettings(
            model=model_path, device=args.device, compute_type=compute_type, batch_size=batch_size
        )
        transcriber = build_transcriber(settings, metrics=Metrics())
        transcriber.load()
        return transcriber

    ours = worker_transcriber(1)
    ours_batched = worker_transcriber(args.batch_size)

    with tempfile.TemporaryDirectory() as tmp:
        files = build_files(Path(tmp), args.quick)
        total_audio_s = 0.0
        for path in files:
            with path.open("rb") as f:
                total_audio_s += decode_mono_16k(f).size / 16000

        def direct(path: Path) -> str:
            segments, _ = model.transcribe(str(path), beam_size=5, vad_filter=True)
            return " ".join(s.text.strip() for s in segments)

        def direct_batched(path: Path) -> str:
            segments, _ = batched.transcribe(
                str(path), beam_size=5, batch_size=args.batch_size, without_timestamps=False
            )
            return " ".join(s.text.strip() for s in segments)

        def ours_seq(path: Path) -> str:
            return ours.transcribe(path, threading.Event()).text

        def ours_batch(path: Path) -> str:
            return ours_batched.transcribe(path, threading.Event()).text

        sides: dict[str, Callable[[Path], str]] = {
            "direct": direct,
            "ai2text": ours_seq,
            "direct-batched": direct_batched,
            "ai2text-batched": ours_batch,
        }
        for fn in sides.values():  # warm-up, excluded
            fn(files[0])

        probe = GpuMemoryProbe(device_index) if cuda else None
        measurements: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
        for r in range(rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                with PeakGpuMemory(probe) as memory:
                    started = time.perf_counter()
                    texts = [sides[name](path) for path in files]
                    elapsed = time.perf_counter() - started
                measurements[name].append(
                    {
                        "seconds": elapsed,
                        "rtf": elapsed / total_audio_s,
                        "gpu_peak_bytes": memory.peak or None,
                        "words": sum(len(t.split()) for t in texts),
                    }
                )

    rows = []
    direct_rtf = {
        name: statistics.median(m["rtf"] for m in measurements[name])
        for name in ("direct", "direct-batched")
    }
    for name, runs in measurements.items():
        rtf = statistics.median(m["rtf"] for m in runs)
        baseline = direct_rtf["direct-batched" if "batched" in name else "direct"]
        peaks = [m["gpu_peak_bytes"] for m in runs if m["gpu_peak_bytes"]]
        rows.append(
            {
                "side": name,
                "rtf_median": rtf,
                "speed_x_realtime": 1 / rtf if rtf else None,
                "ratio_to_direct": rtf / baseline if baseline else None,
                "gpu_peak_mib": max(peaks) / 2**20 if peaks else None,
                "words": runs[0]["words"],
            }
        )
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": args.device,
        "compute_type": compute_type,
        "batch_size": args.batch_size,
        "model": model_path,
        "rounds": rounds,
        "files": [p.name for p in files],
        "audio_s": total_audio_s,
        "rows": rows,
        "measurements": measurements,
        "gpu_name": _gpu_name(device_index) if cuda else None,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"gpu-worker-{stamp}.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"{report['when']} {args.device} {compute_type} batch {args.batch_size},"
        f" {total_audio_s:.0f} s of audio, {rounds} round(s), GPU {report['gpu_name']}",
        "",
        "| side | RTF (median) | x real time | vs plain faster-whisper | GPU peak MiB | words |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        gpu = f"{row['gpu_peak_mib']:.0f}" if row["gpu_peak_mib"] else "–"
        lines.append(
            f"| {row['side']} | {row['rtf_median']:.4f} | {row['speed_x_realtime']:.0f} |"
            f" {row['ratio_to_direct']:.2f} | {gpu} | {row['words']} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")


def _gpu_name(index: int) -> str | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(index))
    except (OSError, pynvml.NVMLError):
        return None
    return name.decode() if isinstance(name, bytes) else str(name)


if __name__ == "__main__":
    main()
