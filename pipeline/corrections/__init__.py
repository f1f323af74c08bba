"""Corrections: a person replaces a transcript's segments; the result is a new revision.

``parse`` reads a correction in any of its forms (JSON, plain text, SRT, WebVTT),
``plan`` checks it against the revision it was made on and the audio's duration,
and ``apply`` writes it as the audio's newest, verified revision. The HTTP route
(``PUT /v1/audio/{id}/transcript``) and ``ai2text correct`` share all three.
"""

from pipeline.corrections.apply import Applied, apply_correction
from pipeline.corrections.errors import CorrectionRefused, RevisionConflict, TranscriptMissing
from pipeline.corrections.parse import Edit, Proposal, parse_body, with_language
from pipeline.corrections.plan import plan_segments

__all__ = [
    "Applied",
    "CorrectionRefused",
    "Edit",
    "Proposal",
    "RevisionConflict",
    "TranscriptMissing",
    "apply_correction",
    "parse_body",
    "plan_segments",
    "with_language",
]
