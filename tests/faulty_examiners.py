"""Examining functions that misbehave, run in the hot folder's child processes.

They live in a small module of their own so that a spawned child imports little to
unpickle them. Each one behaves like ``examine_file`` except for files whose name says
otherwise.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pipeline.config import ValidationSettings
from pipeline.ingest.core import Examined
from pipeline.ingest.examine import Refusal, examine_file
from pipeline.ingest.stability import Fingerprint


def crashing(
    path: str, fingerprint: Fingerprint, name: str, validation: ValidationSettings
) -> Examined | Refusal:
    """Dies like a segfaulting decoder on ``poison*`` files; once on ``crash-once*`` files
    (while a ``<name>.crash`` marker beside it exists, which it removes)."""
    base = Path(path).name
    marker = Path(path).with_name(f".{base}.crash")
    if base.startswith("poison"):
        os._exit(139)
    if base.startswith("crash-once") and marker.exists():
        marker.unlink()
        os._exit(139)
    return examine_file(path, fingerprint, name, validation)


def raising(
    path: str, fingerprint: Fingerprint, name: str, validation: ValidationSettings
) -> Examined | Refusal:
    """A bug in the examining code: raises on ``buggy*`` files."""
    if Path(path).name.startswith("buggy"):
        raise ValueError("a bug in the examining code")
    return examine_file(path, fingerprint, name, validation)


def hanging(
    path: str, fingerprint: Fingerprint, name: str, validation: ValidationSettings
) -> Examined | Refusal:
    """Never returns on ``hang*`` files, like a decoder stuck in a hostile file."""
    if Path(path).name.startswith("hang"):
        threading.Event().wait()  # nothing ever sets it
    return examine_file(path, fingerprint, name, validation)
