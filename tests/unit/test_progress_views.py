"""How ``ai2text ls`` and ``show`` print the progress of running audio."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from typing import Any

from ai2text import views
from pipeline.progress import eta_s, fraction


def row(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": uuid.UUID("0123abcd-0000-0000-0000-000000000000"),
        "state": "processing",
        "duration_s": 150.0,
        "language": None,
        "verdict": None,
        "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "original_name": "talk.mp3",
        "error": None,
        "progress": 0.42,
        "progress_s": 63.0,
        "eta_s": 40.4,
    }
    return base | changes


def test_ls_shows_the_percentage_in_the_state_column_while_a_worker_reports_it() -> None:
    out = io.StringIO()
    views.write_audio_list(
        [row(), row(progress=None, progress_s=None, eta_s=None), row(state="transcribed")], out
    )
    header, running, started, done = out.getvalue().splitlines()
    assert header.index("DURATION") == running.index("150.0s") - 2
    assert running.startswith("0123abcd  processing 42%  ")
    assert started.startswith("0123abcd  processing       ")
    assert done.startswith("0123abcd  transcribed      ")


def test_show_names_progress_position_and_time_left() -> None:
    assert views.progress_line(row()) == "progress 42% (1:03.0 of 2:30.0), about 40 s left"
    assert views.progress_line(row(eta_s=None)) == "progress 42% (1:03.0 of 2:30.0)"
    assert views.progress_line(row(eta_s=3725.0)).endswith("about 1 h 02 min left")
    assert views.progress_line(row(eta_s=125.0)).endswith("about 2 min 05 s left")
    assert views.progress_line(row(progress=None, progress_s=None)) is None


def test_state_line_names_the_file_id_state_and_error() -> None:
    line = views.state_line(row(state="failed", error="audio cannot be decoded"))
    assert line == (
        "talk.mp3  (0123abcd-0000-0000-0000-000000000000)  failed: audio cannot be decoded"
    )


def test_fraction_and_estimate() -> None:
    assert fraction(5.0, 10.0) == 0.5
    assert fraction(10.4, 10.0) == 1.0  # decoded audio may run a little past the header
    assert fraction(1.0, None) is None
    assert eta_s(5.0, 10.0, elapsed_s=10.0) == 10.0
    assert eta_s(0.0, 10.0, elapsed_s=10.0) is None
    assert eta_s(5.0, 10.0, elapsed_s=0.0) is None
