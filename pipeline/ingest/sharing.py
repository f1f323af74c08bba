"""Which earlier transcription of some content a new arrival of the same bytes shares.

Both dedupe decisions use it: ingest's (an upload or a file dropped again) and the
worker's (an object fetched from a source bucket, whose bytes are known only then).
An earlier row is shared when it was asked for with the same options
(``transcription_signature``) and its transcript is still what the workers would
write (``audio.reusable_transcriptions``: not one by a model since replaced). With
none, the arrival is transcribed again, as a variant of the content's original.
"""

from __future__ import annotations

import uuid
from typing import Any

from pipeline.choices import transcription_signature
from pipeline.db import audio as audio_store
from pipeline.db.database import AsyncConn


async def transcribed_alike(
    conn: AsyncConn,
    *,
    tenant: str,
    sha256: str,
    options: dict[str, Any],
    other_than: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """The row (original or variant, not ``other_than``) whose transcription to share."""
    wanted = transcription_signature(options)
    for row in await audio_store.reusable_transcriptions(conn, tenant=tenant, sha256=sha256):
        if row.id != other_than and transcription_signature(row.options) == wanted:
            return row.id
    return None
