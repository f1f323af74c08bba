"""Writing a correction: check the revision it was made on, plan it, store it.

One transaction holds the transcript's row lock from the check to the commit, so
of two people correcting the same revision one gets ``RevisionConflict`` rather
than silently overwriting the other.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from pipeline import catalog
from pipeline.config import CorrectionSettings
from pipeline.corrections.errors import RevisionConflict, TranscriptMissing
from pipeline.corrections.parse import Proposal
from pipeline.corrections.plan import plan_segments
from pipeline.db import revisions
from pipeline.db.database import AsyncConn
from pipeline.db.segments import SegmentValues

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Applied:
    """The new revision's number and the transcript as ``catalog.get_transcript`` has it."""

    revision: int
    transcript: dict[str, Any]


async def apply_correction(
    conn: AsyncConn,
    *,
    tenant: str | None,
    audio_id: uuid.UUID,
    proposal: Proposal,
    author: str,
    limits: CorrectionSettings,
    if_match: int | None = None,
) -> Applied | None:
    """Store ``proposal`` as the audio's newest, verified revision by ``author``.

    None: the caller (``tenant``; None for an admin) has no such audio. The revision
    edited is ``if_match`` (an HTTP If-Match), else the proposal's ``base_revision``;
    with neither, the newest revision is edited. Raises ``TranscriptMissing``,
    ``RevisionConflict`` or ``CorrectionRefused``.
    """
    base_revision = if_match if if_match is not None else proposal.base_revision
    async with conn.transaction():
        locked = await revisions.lock_newest(conn, tenant=tenant, audio_id=audio_id)
        if locked is None:
            return None
        if locked.transcript is None:
            raise TranscriptMissing(locked.audio_state)
        current = int(locked.transcript["revision"])
        if base_revision is not None and base_revision != current:
            raise RevisionConflict(_conflict(base_revision, locked.transcript), current=current)
        planned = plan_segments(
            proposal,
            locked.segments,
            language=locked.transcript["language"],
            duration_s=locked.duration_s,
            limits=limits,
        )
        await revisions.write_correction(
            conn,
            transcript_id=int(locked.transcript["id"]),
            revision=current + 1,
            segments=[SegmentValues(**asdict(s)) for s in planned],
            author=author,
            language=proposal.language,
        )
        transcript = await catalog.get_transcript(conn, tenant=tenant, audio_id=audio_id)
    assert transcript is not None
    log.info(
        "transcript corrected",
        audio_id=str(locked.owner_id),
        revision=current + 1,
        by=author,
        segments=len(planned),
    )
    return Applied(current + 1, transcript)


def _conflict(base: int, transcript: dict[str, Any]) -> str:
    current = transcript["revision"]
    if transcript["verified"]:
        when = f"{transcript['verified_at']:%Y-%m-%d %H:%M:%S %Z}"
        who = f"corrected by {transcript['verified_by']} at {when}"
    else:
        who = "transcribed again"
    return (
        f"the transcript is at revision {current} ({who}), not {base}:"
        " read it again and apply your changes to it"
    )
