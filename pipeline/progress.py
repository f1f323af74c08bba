"""Progress of a running transcription: the channels that carry it and the arithmetic.

Workers write ``jobs.progress_s`` (seconds of the audio transcribed) and notify
``PROGRESS_CHANNEL`` with ``{audio_id, tenant, progress_s, duration_s, progress,
eta_s}``; the audio state-change trigger (migration 0010) notifies ``EVENTS_CHANNEL``
with the tenant. Both are wake-ups for the gateway's event stream and ``ai2text show
--follow``; the tables are the truth.
"""

from __future__ import annotations

PROGRESS_CHANNEL = "ai2text_progress"
EVENTS_CHANNEL = "ai2text_events"
# The states an audio never leaves by itself.
FINAL_STATES = frozenset({"transcribed", "failed", "rejected", "duplicate"})


def fraction(progress_s: float, duration_s: float | None) -> float | None:
    """``progress_s`` of ``duration_s`` as 0..1 (the decoded length may overshoot a little)."""
    if not duration_s or duration_s <= 0:
        return None
    return round(min(1.0, max(0.0, progress_s / duration_s)), 4)


def eta_s(progress_s: float, duration_s: float | None, elapsed_s: float) -> float | None:
    """Seconds left at the rate so far (audio seconds per wall second); None if unknown."""
    if not duration_s or duration_s <= 0 or progress_s <= 0 or elapsed_s <= 0:
        return None
    rate = progress_s / elapsed_s
    return round(max(0.0, (duration_s - progress_s) / rate), 1)
