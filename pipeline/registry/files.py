"""A model directory up to object storage, and back into a local cache, checked.

Uploading streams each file of the (flat) CTranslate2 directory under
``models/<id>/`` and notes its size and sha256; the registry keeps that list. A
worker's copy is downloaded into ``<cache>/registry/.<id>.partial-<pid>``, each file
checked against the list, and renamed into ``<cache>/registry/<id>`` only when all
are right, so a reader never sees half a model. A file missing from the store, cut
short or changed is ``ModelUnavailable`` with the reason, and nothing is left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import BinaryIO, cast

import structlog

from pipeline.errors import Ai2TextError
from pipeline.locks import held_lock
from pipeline.registry.records import ModelFile, ModelRecord
from pipeline.storage import ObjectNotFound, ObjectStore

log = structlog.get_logger(__name__)

_CHUNK = 8 * 1024 * 1024
_MARKER = ".verified"


class ModelUnavailable(Ai2TextError):
    """A registered model's files cannot be fetched or do not match what was recorded."""


def model_prefix(model_id: str) -> str:
    return f"models/{model_id}"


class _Hashing:
    """A reader that hashes what passes through it."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.inner.read(size)
        self.digest.update(chunk)
        return chunk


def upload_model_dir(store: ObjectStore, model_dir: Path, prefix: str) -> list[ModelFile]:
    """Stream every file of ``model_dir`` to ``prefix/<name>``; their sizes and digests."""
    files: list[ModelFile] = []
    entries = sorted(p for p in model_dir.iterdir() if not p.name.startswith("."))
    nested = [p.name for p in entries if not p.is_file()]
    if nested:
        raise ModelUnavailable(
            f"{model_dir} holds folders ({', '.join(nested)}); a CTranslate2 model is flat"
        )
    for path in entries:
        size = path.stat().st_size
        with path.open("rb") as source:
            reader = _Hashing(source)
            store.put_stream(f"{prefix}/{path.name}", cast(BinaryIO, reader), size)
        files.append(ModelFile(path.name, size, reader.digest.hexdigest()))
    log.info("model uploaded", prefix=prefix, files=len(files), bytes=sum(f.size for f in files))
    return files


def cached_dir(cache_dir: Path, model: ModelRecord) -> Path:
    return cache_dir / "registry" / str(model.id)


def fetch_model(store: ObjectStore, model: ModelRecord, cache_dir: Path) -> Path:
    """The local directory of ``model``, downloaded and checked on first use.

    Safe for several processes at once (a lock per model; the loser reuses the copy).
    """
    target = cached_dir(cache_dir, model)
    if _verified(target, model):
        return target
    root = target.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        with held_lock(root / f".{model.id}.lock"):
            if _verified(target, model):
                return target
            staging = root / f".{model.id}.partial-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            try:
                for file in model.file_list:
                    _download(store, model, file, staging / file.name)
                (staging / _MARKER).write_text(json.dumps(model.files, sort_keys=True))
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise ModelUnavailable(f"model {model.name}: cannot write {root}: {exc}") from exc
    log.info("model fetched", model=model.name, model_id=str(model.id), path=str(target))
    return target


def _download(store: ObjectStore, model: ModelRecord, file: ModelFile, dest: Path) -> None:
    key = f"{model.prefix}/{file.name}"
    with dest.open("wb") as out:
        hashing = _HashingWriter(out)
        try:
            size = store.download(key, cast(BinaryIO, hashing))
        except ObjectNotFound as exc:
            raise ModelUnavailable(f"model {model.name}: {key} is missing from storage") from exc
    if size != file.size:
        raise ModelUnavailable(
            f"model {model.name}: {file.name} has {size} bytes in storage, {file.size} recorded"
        )
    if hashing.digest.hexdigest() != file.sha256:
        raise ModelUnavailable(
            f"model {model.name}: {file.name} does not match its recorded sha256"
            f" ({hashing.digest.hexdigest()[:12]}…, expected {file.sha256[:12]}…)"
        )


class _HashingWriter:
    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()

    def write(self, chunk: bytes) -> int:
        self.digest.update(chunk)
        return self.inner.write(chunk)


def _verified(target: Path, model: ModelRecord) -> bool:
    try:
        recorded = json.loads((target / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    if recorded != json.loads(json.dumps(model.files, sort_keys=True)):
        return False
    return all(
        (target / f.name).is_file() and (target / f.name).stat().st_size == f.size
        for f in model.file_list
    )
