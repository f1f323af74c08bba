"""``ai2text models``: installed models, the registry, promotion and rollback.

``ai2text models`` lists the models installed here (no database needed) and, when
there is a database, the registry's models after them. ``models list`` is the
registry alone; ``models promote ID`` runs the promotion gate (``--force`` promotes
whatever it says, and records that it was forced); ``models rollback`` retires the
promoted model and promotes again the one before it (or none: the configured model);
``models register RUN_DIR`` records a run made outside the orchestrator.
"""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

# Only for types: the parser is built for --help, which must not load settings or psycopg.
if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.registry.records import ModelRecord


def add_parser(sub: Any) -> None:
    models = sub.add_parser(
        "models",
        help="the Whisper models installed here, the registry of trained models; promote, rollback",
    )
    models.add_argument("--json", action="store_true", help="one JSON document on stdout")
    actions = models.add_subparsers(dest="models_command")
    listed = actions.add_parser("list", help="the registry: trained models, state, metrics, why")
    listed.add_argument("--json", action="store_true", help="one JSON document on stdout")
    promote = actions.add_parser(
        "promote", help="promote a candidate if the gate allows (test WER, canary)"
    )
    promote.add_argument("model", help="a registered model's id, name, or unique id prefix")
    promote.add_argument(
        "--force", action="store_true", help="promote even if the gate says no (recorded)"
    )
    promote.add_argument("--json", action="store_true", help="one JSON document on stdout")
    rollback = actions.add_parser(
        "rollback", help="retire the promoted model; the one promoted before it runs again"
    )
    rollback.add_argument("--json", action="store_true", help="one JSON document on stdout")
    register = actions.add_parser(
        "register",
        help="register a run directory (model/ + metrics.json) as a candidate, as the"
        " orchestrator does after a run; trained from the model the workers run now",
    )
    register.add_argument("run_dir", type=Path, help="the trainer's output directory")
    register.add_argument("--json", action="store_true", help="one JSON document on stdout")


def actor() -> str:
    """Who changed the registry from this command line (recorded on the model)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def has_database(settings: Settings) -> bool:
    """A database to read without creating one: configured, or the data dir's embedded one."""
    return settings.database.url is not None or (settings.data_dir / "pg").is_dir()


def write_registry(models: list[ModelRecord], out: TextIO) -> None:
    if not models:
        out.write("no trained models registered yet\n")
        return
    out.write(
        f"{'ID':8}  {'NAME':28}  {'STATE':9}  {'TEST WER':15}  {'CANARY WER':15}  {'SIZE':>8}"
        "  CREATED\n"
    )
    for m in models:
        size = f"{m.size_bytes / 2**20:.0f} MiB"
        out.write(
            f"{str(m.id)[:8]}  {m.name:28}  {m.state:9}  {_pair(m, 'test'):15}"
            f"  {_pair(m, 'canary'):15}  {size:>8}  {m.created_at:%Y-%m-%d %H:%M}\n"
        )
        if m.decision:
            out.write(f"{'':8}  {m.decision}\n")


def _pair(model: ModelRecord, split: str) -> str:
    """``current → candidate`` WER for ``split``; '-' where the run had none."""
    current, candidate = model.wer("current", split), model.wer("candidate", split)

    def shown(value: float | None) -> str:
        return f"{value:.3f}" if value is not None else "-"

    return f"{shown(current)} → {shown(candidate)}"


def write_promoted(model: ModelRecord, reason: str, out: TextIO) -> None:
    out.write(f"model {model.name} ({model.id}) promoted: {reason}\n")
    out.write("workers switch to it when they finish their current job\n")


def write_rollback(retired: ModelRecord, restored: ModelRecord | None, out: TextIO) -> None:
    back = f"{restored.name} ({restored.id})" if restored else "the configured asr.model"
    out.write(f"model {retired.name} retired; workers return to {back}\n")


def as_json(model: ModelRecord) -> dict[str, Any]:
    return model.as_dict()


def is_action(args: argparse.Namespace) -> bool:
    return getattr(args, "models_command", None) is not None
