"""The values of ``ai2text ls`` filters: states and points in time.

Each parser is an ``argparse`` type: a bad value becomes a usage error (exit code 2)
that says what would have been accepted.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from pipeline.db.states import AudioState

AUDIO_STATES = tuple(s.value for s in AudioState)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def audio_states(text: str) -> tuple[str, ...]:
    """``failed`` or ``failed,queued``: each one of the audio states."""
    states = tuple(s.strip().lower() for s in text.split(",") if s.strip())
    unknown = [s for s in states if s not in AUDIO_STATES]
    if not states or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown state {', '.join(unknown) or repr(text)}; one of {', '.join(AUDIO_STATES)}"
        )
    return states


def merge_states(groups: Iterable[tuple[str, ...]] | None) -> tuple[str, ...] | None:
    """Repeated ``--state`` options as one tuple, in order, without repeats."""
    if not groups:
        return None
    return tuple(dict.fromkeys(s for group in groups for s in group))


def point_in_time(text: str, *, now: datetime | None = None) -> datetime:
    """An ISO 8601 date or time (no offset: local time), or a time ago: ``30m``, ``2h``, ``3d``.

    Always aware, so that PostgreSQL compares it with ``timestamptz`` as meant.
    """
    text = text.strip()
    relative = _RELATIVE.fullmatch(text.lower())
    if relative:
        amount, unit = float(relative.group(1)), _UNITS[relative.group(2)]
        return (now or datetime.now().astimezone()) - timedelta(**{unit: amount})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r}; give an ISO date or time (2026-12-01, 2026-12-01T08:30)"
            " or a time ago (30m, 2h, 3d, 1w)"
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()
