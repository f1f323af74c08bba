"""Components built from one whole ``Settings``, handing each the groups it takes.

The runtime does the same split (``ai2text.runtime``); tests that hold one
``Settings`` build their components here instead of repeating it. ``metrics``
is a fresh ``Metrics()`` unless the test reads the one it passes.
"""

from __future__ import annotations

from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.ingest.core import Ingestor
from pipeline.ingest.hotfolder import HotFolder
from pipeline.metrics import Metrics
from pipeline.storage import ObjectStore


def ingestor_of(
    settings: Settings, db: Database, store: ObjectStore, *, metrics: Metrics | None = None
) -> Ingestor:
    return Ingestor(
        db,
        store,
        validation=settings.validation,
        max_attempts=settings.queue.max_attempts,
        metrics=Metrics() if metrics is None else metrics,
    )


def hotfolder_of(settings: Settings, ingestor: Ingestor) -> HotFolder:
    return HotFolder(settings.watch, ingestor, data_dir=settings.data_dir)
