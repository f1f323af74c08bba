"""Run in a child process: transcribe one file, report peak memory as JSON on stdout.

``python -m tests.rss_probe FILE`` with the worker's ASR settings from the
environment (``AI2TEXT_ASR__*``). Peak RSS (VmHWM) covers the model, decoding and
transcription: everything a worker holds for one job.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from pipeline.config import load_settings
from pipeline.metrics import Metrics
from workers.asr import build_transcriber


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def main() -> None:
    transcriber = build_transcriber(load_settings().asr, metrics=Metrics())
    transcriber.load()
    loaded_kib = _status_kib("VmRSS")
    result = transcriber.transcribe(Path(sys.argv[1]), threading.Event())
    report = {
        "loaded_rss_kib": loaded_kib,
        "peak_rss_kib": _status_kib("VmHWM"),
        "audio_duration_s": result.audio_duration_s,
        "processing_s": result.processing_s,
        "windows": result.windows,
        "text": result.text,
    }
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
