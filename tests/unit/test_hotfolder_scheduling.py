"""The watcher's tick: files handed to the take loops are not looked at again.

With thousands of files settled at once, re-examining the ones already being
taken made every tick cost O(files) and, since their quiet periods were over,
made the tick run every 5 ms: 10,000 files present at start-up took 745 s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline.choices import TranscriptionPolicy
from pipeline.config import Settings
from pipeline.ingest.core import Ingestor
from pipeline.ingest.hotfolder import HotFolder
from pipeline.metrics import Metrics


def hot_folder(tmp_path: Path) -> HotFolder:
    settings = Settings(
        data_dir=tmp_path / "data",
        watch={"inbox": tmp_path / "inbox", "quiet_period_s": 2, "min_free_bytes": 0},
    )
    ingestor: Any = Ingestor(
        db=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        validation=settings.validation,
        max_attempts=settings.queue.max_attempts,
        metrics=Metrics(),
        policy=TranscriptionPolicy(settings.asr, settings.tenants),
    )
    folder = HotFolder(settings.watch, ingestor, data_dir=settings.data_dir)
    folder._prepare_dirs()
    return folder


def test_settled_files_leave_the_tracker_when_dispatched_and_nothing_is_due(
    tmp_path: Path,
) -> None:
    folder = hot_folder(tmp_path)
    for i in range(200):
        (folder.inbox / f"{i:03}.wav").write_bytes(b"RIFF")
    now = time.monotonic()
    folder._candidates.update(folder._scan(folder.inbox))
    folder._recheck(now)
    assert len(folder.tracker) == 200
    assert folder.tracker.ready(now + 1) == []

    for path in folder.tracker.ready(now + 2):
        folder._dispatch(path)

    assert folder._ready.qsize() == 200
    assert len(folder.tracker) == 0
    assert folder.tracker.next_due() is None  # the tick sleeps its interval, no spinning
    folder._candidates.update(folder._scan(folder.inbox))  # a rescan while they are taken
    folder._recheck(now + 3)
    assert len(folder.tracker) == 0


def test_a_file_that_could_not_be_taken_waits_another_quiet_period(tmp_path: Path) -> None:
    folder = hot_folder(tmp_path)
    path = folder.inbox / "busy.wav"
    path.write_bytes(b"RIFF")
    now = time.monotonic()
    folder._candidates.add(path)
    folder._recheck(now - 5)
    (ready,) = folder.tracker.ready(now)
    folder._dispatch(ready)

    folder._retry_later(path)

    assert path in folder.tracker
    due = folder.tracker.next_due()
    assert due is not None and due >= now + 2
