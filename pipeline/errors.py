"""The ai2text exception tree.

    Ai2TextError
    ├── ConfigError            settings that cannot work (bad path, bad model name)
    ├── RejectedInput          input that will never be accepted; carries a readable reason
    ├── TransientError         worth retrying: timeouts, storage or database down, GPU OOM
    │   ├── StorageUnavailable the object store cannot be reached at all: wait, don't count it
    │   └── DatabaseUnavailable PostgreSQL unreachable, connection lost, pool exhausted
    ├── DatabaseError          PostgreSQL refused a statement
    │   ├── Conflict           a write collided with a concurrent one (a unique key): look again
    │   └── ValueRefused       a value the column cannot hold (out of range, malformed)
    ├── PermanentError         retrying cannot help: undecodable audio, object vanished
    └── LeaseLost              another worker owns the job now; our result must be dropped

Retry policy chooses by type: a job failing with ``TransientError`` is retried
with backoff, ``PermanentError`` ends the job at once. Third-party exceptions are
translated into this tree at the edge where they are raised.
"""

from typing import Literal


class Ai2TextError(Exception):
    """Base class of every error ai2text raises on purpose."""


class ConfigError(Ai2TextError):
    """The configuration cannot work."""


# Why input was refused, in a word: the ``reason`` label of ``ai2text_files_rejected_total``
# (a bounded set; the sentence users read is ``RejectedInput.reason``).
RejectCode = Literal[
    "language",
    "extension",
    "empty",
    "too_large",
    "wav_header",
    "not_audio",
    "no_audio_stream",
    "undecodable",
    "truncated",
    "too_long",
    "too_short",
    "symlink",
    "outside_inbox",
    "not_regular",
    "unreadable",
    "vanished",
    "invalid",
]


class RejectedInput(Ai2TextError):
    """Input that is not acceptable audio; ``reason`` is shown to users, ``code`` counted."""

    def __init__(self, reason: str, *, code: RejectCode = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code: RejectCode = code


class TransientError(Ai2TextError):
    """A failure that may succeed when tried again later."""


class StorageUnavailable(TransientError):
    """The object store is unreachable or failing; nothing is wrong with the job itself.

    Workers put such jobs back without spending an attempt, so an outage of any
    length never turns good audio into dead jobs.
    """


class DatabaseUnavailable(TransientError):
    """PostgreSQL cannot be reached, the connection broke, or no pooled connection came free.

    Raised by ``pipeline.db`` in place of the driver's errors, so nothing outside it
    needs to know the driver.
    """


class DatabaseError(Ai2TextError):
    """PostgreSQL refused a statement (not an outage: trying again will not help)."""


class Conflict(DatabaseError):
    """A write collided with a concurrent one on a unique key; the caller looks again."""


class ValueRefused(DatabaseError):
    """A value PostgreSQL will not store in its column (out of range, malformed)."""


class PermanentError(Ai2TextError):
    """A failure that will happen again however often it is retried."""


class LeaseLost(Ai2TextError):
    """The job's lease was taken over by another worker; results are discarded."""
