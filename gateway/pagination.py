"""Opaque cursors for keyset pagination over (created_at, id), newest first."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any

from pipeline.errors import Ai2TextError


class BadCursor(Ai2TextError):
    """The cursor was not made by this API."""


def encode_cursor(created_at: datetime, row_id: object) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(stamp), str(row_id)
    except (ValueError, TypeError) as exc:
        raise BadCursor("invalid cursor") from exc


def decode_uuid_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    stamp, row_id = decode_cursor(cursor)
    try:
        return stamp, uuid.UUID(row_id)
    except ValueError as exc:
        raise BadCursor("invalid cursor") from exc


def page(rows: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """A page of rows newest first, with the cursor of the next page when one may exist."""
    full = len(rows) == size
    next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if full else None
    return {"items": rows, "next_cursor": next_cursor}
