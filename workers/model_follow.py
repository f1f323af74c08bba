"""Workers follow the promoted model between jobs, without a restart.

One ``ModelFollower`` per worker process, shared by its workers (they share one
model). A promotion or rollback is a NOTIFY on the registry's channel, heard on the
process's hub; each worker also checks the registry when it goes to claim a job
(at most every ``check_interval_s``). The first worker between jobs that sees a
change fetches the promoted model into the local cache (checked file by file),
loads it, and swaps it in; a job already running keeps the model it started with,
so every transcript is made, and recorded, by one model. A model that cannot be
fetched or loaded leaves the worker on its model and says why (``problem``, shown
on the worker's row); it is tried again on the next change.

A job may also ask for another installed model by name (``model`` of the OpenAI
endpoint): it is loaded on first use and kept, one at a time, beside the promoted
one (least recently used goes first).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from pipeline.db.database import Database
from pipeline.errors import PermanentError
from pipeline.models import ModelError, resolve_model
from pipeline.registry import records
from pipeline.registry.files import ModelUnavailable, fetch_model
from pipeline.storage import ObjectStore
from workers.transcription import DelegatingTranscriber, Transcriber

log = structlog.get_logger(__name__)

# Builds an unloaded transcriber for a model directory (or bundled name), named ``label``.
TranscriberFactory = Callable[[str, str], Transcriber]


class Labelled(DelegatingTranscriber):
    """A transcriber that reports ``label`` as its model name (the registry's name)."""

    def __init__(self, inner: Transcriber, label: str) -> None:
        super().__init__(inner)
        self.label = label

    @property
    def model_name(self) -> str:
        return self.label


@dataclass(frozen=True, slots=True)
class ActiveModel:
    """A loaded model: what a job is transcribed with, and recorded as."""

    transcriber: Transcriber
    # The registry model; None: the configured ``asr.model`` (or one of asr.extra_models).
    model_id: uuid.UUID | None
    name: str


class ModelFollower:
    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        *,
        configured: str,
        build: TranscriberFactory,
        cache_dir: Path,
        check_interval_s: float = 5.0,
        extra_models: tuple[str, ...] = (),
    ) -> None:
        """``configured`` is ``asr.model``: what runs while no model is promoted."""
        self.db = db
        self.store = store
        self.configured = configured
        self.build = build
        self.cache_dir = cache_dir
        self.check_interval_s = check_interval_s
        self.extra_models = extra_models
        self._active: ActiveModel | None = None
        # Why the worker does not run the promoted model (None: it does).
        self.problem: str | None = None
        # Bumped on every switch or new problem: each worker updates its row when it moves.
        self.version = 0
        self._stale = True
        self._failed: uuid.UUID | None = None
        self._checked_at = float("-inf")
        self._lock = asyncio.Lock()
        self._extra: ActiveModel | None = None

    @property
    def active(self) -> ActiveModel:
        if self._active is None:
            raise RuntimeError("no model loaded yet: call prepare() first")
        return self._active

    async def prepare(self) -> ActiveModel:
        """Load the promoted model (else the configured one) before the first job.

        A promoted model that cannot be used leaves the worker on the configured one,
        with the reason in ``problem``; the configured model failing raises, as before.
        """
        async with self.db.connection() as conn:
            wanted = await records.promoted(conn)
        self._checked_at = time.monotonic()
        self._stale = False
        if wanted is not None:
            try:
                self._switch(await self._load(wanted))
                return self.active
            except Exception as exc:  # noqa: BLE001 - reported; the configured model runs
                self._switch(await self._load(None))
                self._fail(wanted, exc)
                return self.active
        self._switch(await self._load(None))
        return self.active

    def changed(self) -> None:
        """The registry said something changed (or a notice may have been missed)."""
        self._stale = True
        self._failed = None  # a new decision: a model that failed may be tried again

    async def follow(self) -> ActiveModel:
        """Between jobs: the model to use next, switched first if another is promoted."""
        due = time.monotonic() - self._checked_at >= self.check_interval_s
        if self._active is not None and not (self._stale or due):
            return self._active
        async with self._lock:
            if self._active is not None and not self._stale and not due:
                return self._active  # another worker of this process just did it
            self._stale = False
            self._checked_at = time.monotonic()
            async with self.db.connection() as conn:
                wanted = await records.promoted(conn)
            wanted_id = wanted.id if wanted is not None else None
            if self._active is not None and wanted_id == self.active.model_id:
                if self.problem is not None:
                    self.problem = None
                    self.version += 1
                return self.active
            if wanted_id is not None and wanted_id == self._failed:
                return self.active  # failed before; tried again on the next change
            try:
                loaded = await self._load(wanted)
            except Exception as exc:  # noqa: BLE001 - the worker keeps its model and says why
                self._fail(wanted, exc)
                return self.active
            old = self._active
            self._switch(loaded)
            log.info(
                "switched model",
                model=loaded.name,
                model_id=str(loaded.model_id) if loaded.model_id else None,
                was=old.name if old else None,
            )
            return loaded

    async def for_job(self, requested: str | None) -> ActiveModel:
        """The model a job asked for by name (None or the active one's name: the active)."""
        active = self.active
        if not requested or requested == active.name:
            return active
        if self._extra is not None and self._extra.name == requested:
            return self._extra
        async with self._lock:
            if self._extra is not None and self._extra.name == requested:
                return self._extra
            found = await self._find(requested)
            # At most one extra model in memory: the one used before is let go first.
            self._extra = None
            try:
                self._extra = await self._load_named(found, requested)
            except Exception as exc:  # noqa: BLE001 - the job fails with why; the worker runs on
                raise PermanentError(f"model {requested!r} cannot be loaded: {exc}") from exc
            log.info("loaded a requested model", model=requested)
            return self._extra

    async def _find(self, name: str) -> records.ModelRecord | None:
        if name in self.extra_models or name == self.configured:
            return None
        async with self.db.connection() as conn:
            try:
                model = await records.get(conn, name)
            except records.ModelNotFound as exc:
                raise PermanentError(f"model {name!r} is not installed here") from exc
        if model.state == "retired":
            raise PermanentError(f"model {name!r} is retired")
        return model

    async def _load_named(self, model: records.ModelRecord | None, name: str) -> ActiveModel:
        if model is not None:
            return await self._load(model)
        path = await asyncio.to_thread(resolve_model, name, self.cache_dir)
        transcriber = self.build(path, name)
        await asyncio.to_thread(transcriber.load)
        return ActiveModel(transcriber, None, name)

    async def _load(self, model: records.ModelRecord | None) -> ActiveModel:
        """Fetch (when it is a registry model) and load; raises what went wrong."""
        if model is None:
            transcriber = self.build(self.configured, self.configured)
            await asyncio.to_thread(transcriber.load)
            return ActiveModel(transcriber, None, self.configured)
        path = await asyncio.to_thread(fetch_model, self.store, model, self.cache_dir)
        transcriber = self.build(str(path), model.name)
        await asyncio.to_thread(transcriber.load)
        return ActiveModel(transcriber, model.id, model.name)

    def _switch(self, loaded: ActiveModel) -> None:
        self._active = loaded
        self._failed = None
        self.problem = None
        self.version += 1

    def _fail(self, wanted: records.ModelRecord | None, exc: BaseException) -> None:
        what = wanted.name if wanted is not None else self.configured
        reason = str(exc) if isinstance(exc, ModelUnavailable | ModelError) else _describe(exc)
        self.problem = f"cannot run model {what}: {reason}"
        self._failed = wanted.id if wanted is not None else None
        self.version += 1
        log.error("model switch failed; keeping the current model", problem=self.problem)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
