"""ModelFollower's per-job models: loaded on first use, one at a time beside the default."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from pipeline.db.database import Database
from pipeline.errors import PermanentError
from pipeline.storage import FilesystemStore
from workers.model_follow import ModelFollower
from workers.transcription import TranscribeOptions, Transcription


class _Cursor:
    """A cursor over an empty registry: no model is promoted or registered."""

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def execute(self, query: str, params: Any = None) -> None:
        return None

    async def fetchall(self) -> list[Any]:
        return []


class _Conn:
    def cursor(self, **kwargs: Any) -> _Cursor:
        return _Cursor()


class EmptyRegistry:
    """The part of ``Database`` the follower uses, over a registry with no models."""

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_Conn]:
        yield _Conn()


class Fake:
    """A transcriber that counts its loads and says which model it is."""

    loads: list[str] = []

    def __init__(self, model: str) -> None:
        self.model_name = model
        self.device = "cpu"
        self.compute_type = "int8"
        self.batch_size = 1
        self.device_label = "cpu"

    def load(self) -> None:
        Fake.loads.append(self.model_name)

    def transcribe(
        self, audio_path: Path, cancel: threading.Event, options: TranscribeOptions | None = None
    ) -> Transcription:
        raise NotImplementedError


def follower(tmp_path: Path) -> ModelFollower:
    Fake.loads = []
    return ModelFollower(
        cast(Database, EmptyRegistry()),
        FilesystemStore(tmp_path / "objects"),
        configured="default-model",
        build=lambda model, label: Fake(label),
        cache_dir=tmp_path / "cache",
        extra_models=("extra-a", "extra-b"),
    )


def test_requested_models_load_once_and_only_one_extra_is_kept(tmp_path: Path) -> None:
    models = follower(tmp_path)

    async def scenario() -> list[str]:
        assert (await models.prepare()).name == "default-model"
        used = []
        for name in (None, "extra-a", "extra-a", "default-model", "extra-b", "extra-a"):
            used.append((await models.for_job(name)).name)
        return used

    used = asyncio.run(scenario())
    assert used == ["default-model", "extra-a", "extra-a", "default-model", "extra-b", "extra-a"]
    # extra-a stayed loaded for its second job; extra-b took its place, then gave it back.
    assert Fake.loads == ["default-model", "extra-a", "extra-b", "extra-a"]


def test_a_model_that_is_not_installed_fails_the_job_not_the_worker(tmp_path: Path) -> None:
    models = follower(tmp_path)

    async def scenario() -> str:
        await models.prepare()
        with pytest.raises(PermanentError, match="'elsewhere' is not installed here"):
            await models.for_job("elsewhere")
        return (await models.for_job(None)).name

    assert asyncio.run(scenario()) == "default-model"
