"""Writing a run's results so that a checkpoint on disk always means a finished run.

Both files are written to temporary names in ``--out`` and renamed into place
only after training and evaluation succeeded: ``metrics.json`` first, then
``checkpoint.pt``, so the checkpoint's presence is the success marker. Results
of an earlier run in the same directory are removed when a run starts; if the
run then fails, nothing there can pass for its output.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
import torch

log = structlog.get_logger(__name__)

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
_PART_PREFIX = ".part-"
_RESULT_MODE = 0o644


class RunOutputs:
    """Owns ``checkpoint.pt`` and ``metrics.json`` in ``out_dir`` for one run.

    Use as a context manager: leaving it with an exception (or without
    ``commit``) removes the temporary files and both results.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._committed = False

    def __enter__(self) -> RunOutputs:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stale = [n for n in (CHECKPOINT, METRICS) if (self.out_dir / n).exists()]
        if stale:
            log.warning("removing results of an earlier run", out=str(self.out_dir), files=stale)
        self._remove_results()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            self._remove_results()

    def commit(self, checkpoint: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Write both files under temporary names, then rename them into place."""
        with self._temp(METRICS) as metrics_tmp, self._temp(CHECKPOINT) as checkpoint_tmp:
            body = json.dumps(metrics, indent=2, allow_nan=False) + "\n"
            metrics_tmp.write_text(body, encoding="utf-8")
            torch.save(checkpoint, checkpoint_tmp)
            _fsync(metrics_tmp)
            _fsync(checkpoint_tmp)
            os.replace(metrics_tmp, self.out_dir / METRICS)
            os.replace(checkpoint_tmp, self.out_dir / CHECKPOINT)
        _fsync_dir(self.out_dir)
        self._committed = True

    @contextlib.contextmanager
    def _temp(self, name: str) -> Iterator[Path]:
        fd, raw = tempfile.mkstemp(dir=self.out_dir, prefix=f"{_PART_PREFIX}{name}.")
        os.close(fd)
        path = Path(raw)
        # mkstemp creates 0600; results are meant to be read by whoever evaluates the run.
        path.chmod(_RESULT_MODE)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)  # already renamed away when all went well

    def _remove_results(self) -> None:
        for name in (CHECKPOINT, METRICS):
            (self.out_dir / name).unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
