"""``RUN_DIR/model/`` and ``RUN_DIR/metrics.json``: present together only after a good run.

The model is exported into a hidden staging directory in ``RUN_DIR`` and renamed
to ``model/`` when everything succeeded; ``metrics.json`` is written last, under a
temporary name renamed into place, so its presence marks a finished run. Results of
an earlier run in the same directory are removed when a run starts, and whatever a
failed run wrote is removed when it ends.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

log = structlog.get_logger(__name__)

MODEL_DIR = "model"
METRICS = "metrics.json"
_STAGING_PREFIX = ".part-model-"


class RunDir:
    """Owns ``model/`` and ``metrics.json`` in ``root`` for one run (a context manager)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging = root / f"{_STAGING_PREFIX}{os.getpid()}"
        self._committed = False

    def __enter__(self) -> RunDir:
        self.root.mkdir(parents=True, exist_ok=True)
        if (self.root / METRICS).exists() or (self.root / MODEL_DIR).exists():
            log.warning("removing results of an earlier run", out=str(self.root))
        self._remove()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            self._remove()

    def commit(self, metrics: dict[str, Any]) -> None:
        """Move the staged model into place, then write ``metrics.json``."""
        target = self.root / MODEL_DIR
        shutil.rmtree(target, ignore_errors=True)
        os.replace(self.staging, target)
        fd, raw = tempfile.mkstemp(dir=self.root, prefix=f".part-{METRICS}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(raw, 0o644)
            os.replace(raw, self.root / METRICS)
        finally:
            Path(raw).unlink(missing_ok=True)
        self._committed = True

    def _remove(self) -> None:
        (self.root / METRICS).unlink(missing_ok=True)
        shutil.rmtree(self.root / MODEL_DIR, ignore_errors=True)
        for stale in self.root.glob(f"{_STAGING_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in self.root.glob(f".part-{METRICS}.*"):
            stale.unlink(missing_ok=True)
