"""Why a correction was not written (each carries the sentence a person reads)."""

from __future__ import annotations

from pipeline.errors import Ai2TextError


class CorrectionRefused(Ai2TextError):
    """The correction itself cannot be used (bad times, empty text, too big, bad syntax)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnsupportedFormat(CorrectionRefused):
    """The correction is in a format (a Content-Type) that is not read."""


class RevisionConflict(Ai2TextError):
    """The transcript changed since the revision the correction was made on."""

    def __init__(self, reason: str, *, current: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.current = current


class TranscriptMissing(Ai2TextError):
    """The audio has no transcript (yet) to correct; ``state`` is the audio's."""

    def __init__(self, state: str) -> None:
        super().__init__(f"no transcript yet: the audio is {state}")
        self.state = state
