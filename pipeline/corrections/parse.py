"""A correction as sent: JSON, plain text, SRT or WebVTT, read into one ``Proposal``.

JSON is ``{"segments": [{"idx"?, "start"?, "end"?, "text", "channel"?, "language"?},
...], "base_revision"?, "language"?}``. It is built so that the document ``GET
/v1/audio/{id}/transcript?format=json`` answers can be sent back with edited texts:
``start_s``/``end_s`` are read as ``start``/``end``, the ``revision`` it was read at
counts as ``base_revision``, and every other field is ignored. Without
``segments``, its ``text`` is read as plain text.

Plain text is one line per segment, as the ``txt`` export writes it. SRT and WebVTT
cues become segments with their own times (the exports cut long segments into
several cues; a cue that keeps its segment's times and text keeps its scores). A
channel label (``[ch1] `` or WebVTT's ``<v ch1>``) names a split recording's channel.

A language (the JSON's ``language``, per segment or for the whole transcript, or the
caller's ``language`` beside a body of any kind) says what was spoken where the model
got it wrong: a corrected transcript is training data, filed under its language.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pipeline.config import LanguageCode
from pipeline.corrections.errors import CorrectionRefused, UnsupportedFormat

Kind = Literal["json", "txt", "srt", "vtt"]
KINDS: tuple[Kind, ...] = ("json", "txt", "srt", "vtt")

# Content types each kind is sent as (the first is the one documented).
MEDIA_TYPES: dict[str, Kind] = {
    "application/json": "json",
    "text/plain": "txt",
    "application/x-subrip": "srt",
    "text/srt": "srt",
    "application/srt": "srt",
    "text/vtt": "vtt",
}


@dataclass(frozen=True, slots=True)
class Edit:
    """One segment of the corrected transcript, as the client gave it.

    ``idx`` names the segment of the base revision it corrects (its times and channel
    are kept unless given); without ``idx``, ``start`` and ``end`` are required.
    """

    text: str
    idx: int | None = None
    start: float | None = None
    end: float | None = None
    channel: int | None = None
    # What is spoken in it, where the person says so (else the segment's own).
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Proposal:
    edits: tuple[Edit, ...]
    # The revision the correction was made on (409 if the transcript moved on since).
    base_revision: int | None = None
    # Plain text: line i corrects the base's i-th segment with text.
    by_line: bool = False
    # The transcript's language, where the person says so: every segment that names
    # none of its own is in it.
    language: str | None = None


Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
# The settings' own check of a language code, for one given beside the body.
_LANGUAGE_CODE: TypeAdapter[str] = TypeAdapter(LanguageCode)


class SegmentIn(BaseModel):
    """One segment of a JSON correction; fields other than these are ignored."""

    model_config = ConfigDict(extra="ignore")

    idx: int | None = Field(default=None, ge=0, description="the segment it corrects")
    start: Seconds | None = Field(default=None, validation_alias=AliasChoices("start", "start_s"))
    end: Seconds | None = Field(default=None, validation_alias=AliasChoices("end", "end_s"))
    text: str = Field(description="the corrected text (not blank)")
    channel: int | None = Field(default=None, ge=0, description="split stereo: 0 = left")
    language: LanguageCode | None = Field(
        default=None, description="what is spoken in this segment (ISO 639-1, e.g. 'en')"
    )


class CorrectionIn(BaseModel):
    """The JSON body of ``PUT /v1/audio/{id}/transcript``."""

    model_config = ConfigDict(extra="ignore")

    segments: list[SegmentIn] | None = Field(
        default=None, description="the whole new transcript, in order; omitted segments go"
    )
    text: str | None = Field(
        default=None, description="without segments: plain text, one line per segment"
    )
    base_revision: int | None = Field(
        default=None, ge=1, description="the revision edited (else If-Match, else revision)"
    )
    revision: int | None = Field(
        default=None, ge=1, description="as GET answers it: read as base_revision"
    )
    language: LanguageCode | None = Field(
        default=None,
        description="the transcript's language where the model got it wrong (ISO 639-1);"
        " segments without their own are in it",
    )


def request_body_schema() -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a correction: the JSON schema, or text of a format."""
    schema = CorrectionIn.model_json_schema()
    segment = schema.pop("$defs")["SegmentIn"]
    schema["properties"]["segments"]["anyOf"][0]["items"] = segment
    text = {"schema": {"type": "string"}}
    return {
        "required": True,
        "content": {
            "application/json": {"schema": schema},
            "text/plain": text,
            "application/x-subrip": text,
            "text/vtt": text,
        },
    }


def kind_of_media_type(content_type: str | None, body: bytes) -> Kind:
    """The kind of a body from its Content-Type; plain text that is SRT or WebVTT is sniffed."""
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    kind = MEDIA_TYPES.get(media)
    if kind is None:
        names = ", ".join(dict.fromkeys(MEDIA_TYPES))
        raise UnsupportedFormat(f"unsupported Content-Type {media!r}: send one of {names}")
    return _sniffed(body) if kind == "txt" else kind


def kind_of_file(name: str, body: bytes) -> Kind:
    """The kind of a file from its extension (``.json``, ``.txt``, ``.srt``, ``.vtt``)."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix in KINDS:
        return suffix
    return _sniffed(body)


def _sniffed(body: bytes) -> Kind:
    head = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:200]
    if head.startswith(b"WEBVTT"):
        return "vtt"
    if head.startswith((b"{", b"[")):
        return "json"
    if _TIMING.search(head.decode("utf-8", "replace").split("\n\n", 1)[0]):
        return "srt"
    return "txt"


def parse_body(body: bytes, kind: Kind) -> Proposal:
    """The proposal a body of ``kind`` holds; ``CorrectionRefused`` says what is wrong."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CorrectionRefused("the correction is not UTF-8 text") from None
    if "\x00" in text:
        raise CorrectionRefused("the correction holds a NUL character")
    if kind == "json":
        return _from_json(text)
    if kind == "txt":
        return _from_text(text)
    return Proposal(tuple(_from_cues(text, vtt=kind == "vtt")))


def _from_json(text: str) -> Proposal:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorrectionRefused(f"not valid JSON: {exc.msg} (line {exc.lineno})") from None
    try:
        doc = CorrectionIn.model_validate(raw)
    except ValidationError as exc:
        raise CorrectionRefused(_readable(exc)) from None
    base = doc.base_revision if doc.base_revision is not None else doc.revision
    if doc.segments is None:
        if doc.text is None:
            raise CorrectionRefused('give "segments" (a list) or "text"')
        return replace(_from_text(doc.text, base_revision=base), language=doc.language)
    edits = tuple(Edit(s.text, s.idx, s.start, s.end, s.channel, s.language) for s in doc.segments)
    return Proposal(edits, base_revision=base, language=doc.language)


def with_language(proposal: Proposal, language: str | None) -> Proposal:
    """``proposal`` in ``language`` as the caller names it beside the body.

    A JSON body that names another language is refused: two answers to one question.
    """
    if language is None:
        return proposal
    try:
        _LANGUAGE_CODE.validate_python(language)
    except ValidationError:
        raise CorrectionRefused(
            f"language {language!r} is not a language code such as 'en' or 'vi'"
        ) from None
    if proposal.language is not None and proposal.language != language:
        raise CorrectionRefused(
            f"the body says language {proposal.language!r} and the request {language!r}"
        )
    return replace(proposal, language=language)


def _readable(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "the body"
        problems.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


_LABEL = re.compile(r"^\[ch(\d{1,2})\]\s*")


def _labelled(text: str) -> tuple[str, int | None]:
    """``[ch2] text`` → (``text``, 1): the channel a line is labelled with (from 1)."""
    match = _LABEL.match(text)
    if match is None or int(match[1]) < 1:
        return text, None
    return text[match.end() :], int(match[1]) - 1


def _from_text(text: str, *, base_revision: int | None = None) -> Proposal:
    edits = []
    for line in text.splitlines():
        if line.strip():
            body, channel = _labelled(line.strip())
            edits.append(Edit(body, channel=channel))
    return Proposal(tuple(edits), base_revision=base_revision, by_line=True)


_CLOCK = r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{3})"
_TIMING = re.compile(rf"^\s*{_CLOCK}\s*-->\s*{_CLOCK}", re.MULTILINE)
_VOICE = re.compile(r"^<v(?:\.[^\s>]*)?\s+ch(\d{1,2})>")
_TAG = re.compile(r"<[^>]*>")


def _seconds(hours: str | None, minutes: str, secs: str, millis: str) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(secs) + int(millis) / 1000


def _from_cues(text: str, *, vtt: bool) -> list[Edit]:
    """Cues of SRT (numbered blocks) or WebVTT (header, optional ids, NOTE blocks)."""
    blocks = [b for b in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").strip()) if b.strip()]
    if vtt:
        if not blocks or not blocks[0].startswith("WEBVTT"):
            raise CorrectionRefused("a WebVTT file starts with the line WEBVTT")
        blocks = blocks[1:]
    edits = []
    for number, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        if vtt and lines[0].startswith(("NOTE", "STYLE", "REGION")):
            continue
        at = next((i for i, line in enumerate(lines[:2]) if _TIMING.match(line)), None)
        if at is None:
            raise CorrectionRefused(f"cue {number} has no timing line (00:00:01,000 --> ...)")
        timing = _TIMING.match(lines[at])
        assert timing is not None
        groups = timing.groups()
        start, end = _seconds(*groups[:4]), _seconds(*groups[4:])
        edits.append(_cue_edit(" ".join(lines[at + 1 :]).strip(), start, end, vtt=vtt))
    if not edits:
        raise CorrectionRefused("the file holds no cues")
    return edits


def _cue_edit(text: str, start: float, end: float, *, vtt: bool) -> Edit:
    channel = None
    voice = _VOICE.match(text) if vtt else None
    if voice is not None and int(voice[1]) >= 1:
        channel = int(voice[1]) - 1
    if vtt:
        text = _TAG.sub("", text)
        text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    else:
        text, channel = _labelled(text)
    return Edit(text, start=start, end=end, channel=channel)
