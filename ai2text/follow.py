"""``ai2text show ID --follow``: an audio's state and progress as they change, then its transcript.

Reads the database directly like ``show``, woken by the notifications the gateway's
event stream uses (``pipeline.progress``): the audio's row is read again on every
state-change notice (and every ``POLL_S``, in case one was missed), and a progress
notice for it prints a line when the whole percentage moves, and the segments the
worker has produced since the last (``job_partial_segments``), one line each as
``[start → end] text``. Once the transcript is stored it is printed as ``show`` prints
it (the preview lines may differ a little from it). Returns when the audio reaches a
final state.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, TextIO

from ai2text import views
from pipeline import catalog
from pipeline.db.database import Database
from pipeline.db.notifications import NotificationHub
from pipeline.db.notify import next_notices
from pipeline.db.partials import Follower, PartialSegment, segments_after
from pipeline.progress import EVENTS_CHANNEL, FINAL_STATES, PROGRESS_CHANNEL

# The longest the audio's row goes unread, whatever the notifications say.
POLL_S = 5.0

Render = Callable[[dict[str, Any], dict[str, Any]], str]


async def follow(db: Database, ref: str, out: TextIO, render: Render) -> int:
    """Print as ``ref``'s audio moves; 0 once transcribed (or a duplicate), else 1.

    ``render(audio, transcript)`` is what ``show`` prints of a transcript.
    """
    async with (
        NotificationHub(db) as hub,
        hub.subscription(EVENTS_CHANNEL) as changes,
        hub.subscription(PROGRESS_CHANNEL) as progress,
    ):
        async with db.connection() as conn:
            audio_id = await catalog.resolve_audio_id(conn, ref)
        audio = await _audio(db, audio_id)
        _line(out, views.state_line(audio))
        shown = _show_progress(out, audio, -1)
        follower = Follower()
        await _show_segments(db, out, audio_id, follower)
        while audio["state"] not in FINAL_STATES:
            notices = await next_notices((changes, progress), (), POLL_S)
            reread = not notices
            for notice in notices:
                if notice.channel == PROGRESS_CHANNEL and not notice.missed:
                    row = _parse(notice.payload)
                    if row is not None and row.get("audio_id") == str(audio_id):
                        shown = _show_progress(out, row, shown)
                        await _show_segments(db, out, audio_id, follower)
                else:
                    reread = True
            if reread:
                changes.clear()
                state = audio["state"]
                audio = await _audio(db, audio_id)
                if audio["state"] != state:
                    _line(out, views.state_line(audio))
                    shown = _show_progress(out, audio, -1)
        async with db.connection() as conn:
            transcript = await catalog.get_transcript(conn, tenant=None, audio_id=audio_id)
    if transcript is None:
        return 0 if audio["state"] == "duplicate" else 1
    out.write("\n" + render(audio, transcript))
    out.flush()
    return 0


def _parse(payload: str) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def _audio(db: Database, audio_id: uuid.UUID) -> dict[str, Any]:
    async with db.connection() as conn:
        audio = await catalog.get_audio(conn, tenant=None, audio_id=audio_id)
    if audio is None:
        raise catalog.NotFound(f"no audio with id {audio_id}")
    return audio


async def _show_segments(
    db: Database, out: TextIO, audio_id: uuid.UUID, follower: Follower
) -> None:
    """Print the segments produced since the last read."""
    async with db.connection() as conn:
        segments = await segments_after(conn, audio_id, follower.after)
    restarted, shown = follower.take(segments)
    if restarted:
        _line(out, "(the job started again; its segments so far:)")
    for segment in shown:
        _line(out, segment_line(segment))


def segment_line(segment: PartialSegment) -> str:
    return f"[{_clock(segment.start_s)} → {_clock(segment.end_s)}] {segment.text}"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(0.0, seconds), 60)
    return f"{int(minutes):02d}:{rest:04.1f}"


def _show_progress(out: TextIO, row: dict[str, Any], shown: int) -> int:
    """Print ``row``'s progress when its whole percentage moved; the percentage shown."""
    line = views.progress_line(row)
    if line is None:
        return shown
    percent = int(row["progress"] * 100)
    if percent > shown:
        _line(out, line)
        return percent
    return shown


def _line(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()
