"""The gateway served in-process on loopback, for the integration tests of its API.

``gateway_settings`` writes the signer's public key where ``auth`` reads it;
``gateway`` serves the real app over a real socket until the block ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ai2text.components import ingestor_of
from gateway.app import create_app, serve
from pipeline.config import Settings
from pipeline.db.database import Database
from pipeline.http_serve import bind_socket, url_of
from pipeline.metrics import Metrics
from pipeline.storage import open_store
from tests.e2e.gateway_harness import AUDIENCE, ISSUER, Signer, public_pem


def gateway_settings(root: Path, database_url: str, signer: Signer, **extra: Any) -> Settings:
    """Settings with data under ``root`` and ``signer``'s tokens trusted; ``extra``: more fields."""
    pem = root / "jwt.pem"
    pem.write_bytes(public_pem(signer.key))
    return Settings(
        data_dir=root / "data",
        database={"url": database_url},
        auth={"public_key_file": pem, "issuer": ISSUER, "audience": AUDIENCE},
        **extra,
    )


def workerless_settings(root: Path, database_url: str, signer: Signer) -> Settings:
    """``gateway_settings`` with ``tiny.en`` configured and no worker running: a
    transcription request answers 504 at once and its job stays queued."""
    return gateway_settings(
        root, database_url, signer, asr={"model": "tiny.en"}, gateway={"transcription_wait_s": 0}
    )


@asynccontextmanager
async def gateway(settings: Settings) -> AsyncIterator[str]:
    """The gateway's base URL while it serves."""
    db = Database(settings.database, embedded=None)
    await db.open()
    stop = asyncio.Event()
    try:
        store = open_store(settings.storage, settings.data_dir)
        app = create_app(settings, db, store, ingestor_of(settings, db, store, Metrics()))
        sock = bind_socket("127.0.0.1", 0, what="test gateway")
        serving = asyncio.create_task(serve(app, sock, stop))
        try:
            yield url_of(sock)
        finally:
            stop.set()
            await serving
    finally:
        await db.close()
