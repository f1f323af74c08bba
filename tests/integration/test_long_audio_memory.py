"""Worker memory does not grow with the length of the file (issue 6).

Each file is transcribed in a fresh child process (``tests.rss_probe``) with the
default ASR settings, so peak RSS is that of one worker holding one job. The
recordings are silence with real speech every 10 minutes: VAD skips the silence,
which keeps a 3-hour transcription to about a minute on two CPU cores while the
decoder still reads and resamples every sample of the 345 MB file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.sparse_audio import write_sparse_speech_wav

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SPEECH_EVERY_S = 600


def transcribe_in_child(path: Path) -> dict[str, Any]:
    # The defaults are what is under test: no AI2TEXT_* setting leaks in from outside.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI2TEXT_")}
    env.update(AI2TEXT_ASR__DEVICE="cpu", AI2TEXT_LOG_LEVEL="warning")
    done = subprocess.run(
        [sys.executable, "-m", "tests.rss_probe", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def speech_offsets(total_s: int) -> list[float]:
    return [30.0 + t for t in range(0, total_s, SPEECH_EVERY_S)]


def test_three_hour_file_peaks_within_one_and_a_half_times_a_ten_minute_file(
    tmp_path: Path,
) -> None:
    ten_minutes = tmp_path / "ten-minutes.wav"
    three_hours = tmp_path / "three-hours.wav"
    write_sparse_speech_wav(ten_minutes, 600, speech_offsets(600))
    write_sparse_speech_wav(three_hours, 3 * 3600, speech_offsets(3 * 3600))

    short = transcribe_in_child(ten_minutes)
    long = transcribe_in_child(three_hours)
    three_hours.unlink()

    assert short["windows"] == 1  # under the 30-minute default: decoded at once
    assert long["windows"] > 1
    assert long["audio_duration_s"] == pytest.approx(3 * 3600, abs=0.1)
    # All 18 utterances are in the transcript: windowing lost nothing.
    assert long["text"].lower().count("fellow americans") == 18, long["text"]
    ratio = long["peak_rss_kib"] / short["peak_rss_kib"]
    sys.stderr.write(
        f"peak RSS: 10 min {short['peak_rss_kib'] / 1024:.0f} MiB,"
        f" 3 h {long['peak_rss_kib'] / 1024:.0f} MiB, ratio {ratio:.2f}\n"
    )
    assert ratio <= 1.5, (short, {k: v for k, v in long.items() if k != "text"})
