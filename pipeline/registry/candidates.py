"""From a finished training run to a registered candidate, and through the gate.

The trainer contract: a successful run leaves ``RUN_DIR/model/`` (a CTranslate2
Whisper directory) and ``RUN_DIR/metrics.json``. Both present → the directory goes
to object storage and a ``candidate`` row records it with its metrics. The gate
(``pipeline.registry.gate``) then decides, automatically with
``training.auto_promote`` or when an operator asks (``ai2text models promote``).

A candidate is judged against the model it was trained from; when the workers run
another model by then, its numbers say nothing about that one, and it is not
promoted (an operator may still force it).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from pipeline.config import AsrSettings, TrainingSettings
from pipeline.db.database import Database
from pipeline.errors import Ai2TextError
from pipeline.models import check_model_dir, default_cache_dir, resolve_model
from pipeline.registry import records
from pipeline.registry.files import fetch_model, model_prefix, upload_model_dir
from pipeline.registry.gate import Decision, GateRules, decide
from pipeline.storage import ObjectStore

log = structlog.get_logger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class CandidateRejected(Ai2TextError):
    """A run's output cannot be registered (no readable metrics, not a model); says why."""


@dataclass(frozen=True, slots=True)
class BaseModel:
    """The model workers run now: what a new run starts from."""

    name: str
    # The registry model; None: the configured ``asr.model``.
    model_id: uuid.UUID | None
    directory: str


def rules_of(training: TrainingSettings) -> GateRules:
    return GateRules(
        promote_margin=training.promote_margin, canary_tolerance=training.canary_tolerance
    )


def cache_dir_of(asr: AsrSettings) -> Path:
    return asr.model_cache_dir or default_cache_dir()


async def current_base(db: Database, store: ObjectStore, asr: AsrSettings) -> BaseModel:
    """The promoted model's local copy, else ``asr.model`` resolved to its directory."""
    async with db.connection() as conn:
        model = await records.promoted(conn)
    cache = cache_dir_of(asr)
    if model is None:
        directory = await asyncio.to_thread(resolve_model, asr.model, cache)
        return BaseModel(asr.model, None, directory)
    path = await asyncio.to_thread(fetch_model, store, model, cache)
    return BaseModel(model.name, model.id, str(path))


async def current_base_named(db: Database, asr: AsrSettings) -> BaseModel:
    """As ``current_base``, without fetching or assembling its directory."""
    async with db.connection() as conn:
        model = await records.promoted(conn)
    if model is None:
        return BaseModel(asr.model, None, "")
    return BaseModel(model.name, model.id, "")


def read_run_output(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """``(model dir, metrics)`` when the run left a model, None when it left none (the
    CTC reference trainer writes metrics.json and a checkpoint, no model to serve)."""
    model_dir, metrics_path = run_dir / "model", run_dir / "metrics.json"
    if not model_dir.exists():
        return None
    if not metrics_path.is_file():
        raise CandidateRejected(f"{run_dir} has a model but no metrics.json")
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError) as exc:
        raise CandidateRejected(f"{metrics_path} cannot be read as JSON: {exc}") from exc
    if not isinstance(metrics, dict):
        raise CandidateRejected(f"{metrics_path} is not a JSON object")
    try:
        check_model_dir(model_dir)
    except Ai2TextError as exc:
        raise CandidateRejected(str(exc)) from exc
    return model_dir, metrics


def name_for(dataset: str | None, version: int | None, model_id: uuid.UUID) -> str:
    """``<dataset>-v<N>-<id>``, or ``ft-<date>-<id>`` outside a dataset version."""
    short = model_id.hex[:6]
    if dataset and version is not None:
        stem = _UNSAFE.sub("-", dataset).strip("-.")[:60] or "ft"
        return f"{stem}-v{version}-{short}"
    return f"ft-{datetime.now(UTC):%Y%m%d}-{short}"


async def register_run(
    db: Database,
    store: ObjectStore,
    run_dir: Path,
    *,
    base: BaseModel,
    run_id: uuid.UUID | None = None,
    dataset_version_id: int | None = None,
    dataset: str | None = None,
    version: int | None = None,
    tenant: str | None = None,
    created_by: str = "orchestrator",
) -> records.ModelRecord | None:
    """Upload and record the run's model as a candidate; None when it left no model."""
    found = await asyncio.to_thread(read_run_output, run_dir)
    if found is None:
        log.info("the run left no model to register", run_dir=str(run_dir))
        return None
    model_dir, metrics = found
    model_id = uuid.uuid4()
    prefix = model_prefix(str(model_id))
    files = await asyncio.to_thread(upload_model_dir, store, model_dir, prefix)
    new = records.NewModel(
        id=model_id,
        name=name_for(dataset, version, model_id),
        base_model=base.name,
        base_model_id=base.model_id,
        dataset_version_id=dataset_version_id,
        run_id=run_id,
        metrics=metrics,
        prefix=prefix,
        files=files,
        created_by=created_by,
        tenant=tenant,
    )
    async with db.connection() as conn:
        model = await records.register(conn, new)
    log.info("candidate registered", model=model.name, model_id=str(model.id))
    return model


async def judge(
    db: Database, ref: str, rules: GateRules, *, actor: str, force: bool = False
) -> tuple[records.ModelRecord, Decision]:
    """Run the gate on ``ref`` and record the outcome: promoted, or refused with why.

    ``force`` promotes whatever the gate says, recording that it was forced and what
    the gate said.
    """
    async with db.connection() as conn:
        model = await records.get(conn, ref)
        current = await records.promoted(conn)
        decision = gate_for(model, current, rules)
        if force and not decision.promote:
            decision = Decision(True, f"forced by {actor} ({decision.reason})")
        if decision.promote:
            model = await records.promote(conn, str(model.id), actor=actor, reason=decision.reason)
        else:
            model = await records.refuse(conn, str(model.id), actor=actor, reason=decision.reason)
    log.info("promotion decided", model=model.name, promoted=decision.promote, why=decision.reason)
    return model, decision


def gate_for(
    model: records.ModelRecord, current: records.ModelRecord | None, rules: GateRules
) -> Decision:
    """The gate's decision for ``model`` while ``current`` is promoted (None: asr.model)."""
    if model.state == "promoted":
        return Decision(False, f"model {model.name} is already the promoted model")
    running = current.id if current is not None else None
    if model.base_model_id != running:
        now = current.name if current is not None else "the configured model"
        return Decision(
            False,
            f"not promoted: trained from {model.base_model}, but the workers run {now};"
            " its numbers do not compare with that model",
        )
    return decide(model.metrics, rules)
