"""S3 bucket-notification bodies parsed into typed object events (pure logic, no I/O).

Accepted shapes, all of which may reach the same endpoint:

* AWS S3 event notifications: ``{"Records": [{"eventName": "ObjectCreated:Put",
  "s3": {"bucket": {"name": ...}, "object": {"key": ..., ...}}}]}``.
* MinIO webhook bodies: ``{"EventName": ..., "Key": "bucket/obj", "Records": [...]}``;
  the records have the AWS shape. MinIO's ``listen_bucket_notification`` yields the
  same ``{"Records": [...]}`` shape as an already-decoded mapping.
* AWS's ``s3:TestEvent``, sent once when a notification is configured: no events.

Object keys in records are URL-encoded the ``application/x-www-form-urlencoded``
way (a space is ``+``, a literal plus is ``%2B``) and are decoded here. The
top-level MinIO ``Key`` is *not* encoded: MinIO builds it from the already
unescaped object name, so it is used as sent.

Every field is checked before anything is stored: text must be valid Unicode
without control characters (PostgreSQL cannot store a NUL) and within a length
bound, and ``size`` an integer between 0 and the largest object S3-compatible
stores hold. A body that breaks any rule is a ``MalformedEvent`` (a client
error), never something that fails later in the database.

Records of every event type are returned; callers filter on ``is_created``.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from pipeline.errors import Ai2TextError

MAX_KEY_BYTES = 1024
# MinIO's largest object (AWS S3's is 5 TiB); anything larger is not a real object.
MAX_OBJECT_BYTES = 50 * 1024**4
# Bounds on the other text fields, far above what S3, MinIO and Ceph send.
MAX_NAME_BYTES = 255  # event names and bucket names
MAX_TOKEN_BYTES = 1024  # eTag, versionId, sequencer
TEST_EVENT = "s3:TestEvent"

_HEX = re.compile(r"[0-9A-Fa-f]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class MalformedEvent(Ai2TextError):
    """A notification body that cannot be parsed; ``reason`` is fit for a 400 body."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ObjectEvent:
    bucket: str
    key: str  # URL-decoded object key
    event_name: str  # as sent: "ObjectCreated:Put" (AWS) or "s3:ObjectCreated:Put" (MinIO)
    size: int | None
    etag: str | None  # without surrounding quotes
    version_id: str | None
    sequencer: str | None  # hex string as sent

    @property
    def is_created(self) -> bool:
        return "ObjectCreated" in self.event_name


def parse_notification(
    body: bytes | str | Mapping[str, Any], *, max_records: int = 1000
) -> list[ObjectEvent]:
    """Parse one notification body into its events, in the order sent.

    Raises ``MalformedEvent`` for anything that is not a well-formed notification.
    """
    if max_records < 0:
        raise ValueError("max_records must not be negative")
    doc = _load(body)

    records = doc.get("Records")
    if records is not None and not isinstance(records, list | tuple):
        raise MalformedEvent("Records must be a list")
    if records:
        if len(records) > max_records:
            raise MalformedEvent(f"too many records: {len(records)} (limit {max_records})")
        return [_parse_record(i, record) for i, record in enumerate(records)]

    if "EventName" in doc or "Key" in doc:
        if max_records < 1:
            raise MalformedEvent(f"too many records: 1 (limit {max_records})")
        return [_parse_minio_summary(doc)]
    if "Records" in doc or doc.get("Event") == TEST_EVENT:
        return []
    raise MalformedEvent("body has no Records")


def sequencer_is_newer(candidate: str | None, current: str | None) -> bool:
    """Whether ``candidate`` is a later sequencer than ``current`` for the same key.

    As AWS documents: right-pad the shorter value with zeros, then compare (hex
    digits, case-insensitive). Without a current sequencer anything is newer;
    without a candidate nothing is (unless both are missing). Values that are
    not hex strings are never newer and never beaten.
    """
    if current is None:
        return True
    if candidate is None:
        return False
    if not (_HEX.fullmatch(candidate) and _HEX.fullmatch(current)):
        return False
    width = max(len(candidate), len(current))
    return candidate.upper().ljust(width, "0") > current.upper().ljust(width, "0")


def _load(body: object) -> Mapping[str, Any]:
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
        skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
        try:
            body = raw[skip:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedEvent(
                f"body is not valid UTF-8 (bad byte at offset {skip + exc.start})"
            ) from None
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as exc:
            raise MalformedEvent(
                f"body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            ) from None
        except RecursionError:
            raise MalformedEvent("body is not valid JSON (nested too deeply)") from None
        except ValueError:
            # e.g. an integer literal longer than Python's int-conversion limit
            raise MalformedEvent("body is not valid JSON (unreadable value)") from None
    if not isinstance(body, Mapping):
        raise MalformedEvent("body is not a JSON object")
    return body


def _parse_record(index: int, record: object) -> ObjectEvent:
    where = f"Records[{index}]"
    if not isinstance(record, Mapping):
        raise MalformedEvent(f"{where} is not an object")
    event_name = _required_str(record, ("eventName",), where)
    _check_text(event_name, f"{where}: eventName", MAX_NAME_BYTES)
    bucket = _required_str(record, ("s3", "bucket", "name"), where)
    _check_bucket(bucket, f"{where}: s3.bucket.name")
    raw_key = _required_str(record, ("s3", "object", "key"), where)
    obj = record["s3"]["object"]

    try:
        key = unquote_plus(raw_key, errors="strict")
    except UnicodeDecodeError:
        raise MalformedEvent(f"{where}: s3.object.key is not valid percent-encoded UTF-8") from None
    _check_key(key, f"{where}: s3.object.key")

    etag = _optional_str(obj, "eTag", where)
    return ObjectEvent(
        bucket=bucket,
        key=key,
        event_name=event_name,
        size=_optional_size(obj, where),
        etag=_strip_quotes(etag) if etag is not None else None,
        version_id=_optional_str(obj, "versionId", where),
        sequencer=_optional_str(obj, "sequencer", where),
    )


def _parse_minio_summary(doc: Mapping[str, Any]) -> ObjectEvent:
    """A MinIO webhook body without records: ``Key`` is ``bucket/object``, unencoded."""
    event_name = doc.get("EventName")
    if not isinstance(event_name, str) or not event_name:
        raise MalformedEvent("EventName is missing or not a non-empty string")
    _check_text(event_name, "EventName", MAX_NAME_BYTES)
    full = doc.get("Key")
    if not isinstance(full, str) or not full:
        raise MalformedEvent("Key is missing or not a non-empty string")
    bucket, sep, key = full.partition("/")
    if not sep or not bucket:
        raise MalformedEvent("Key must have the form 'bucket/object-key'")
    _check_bucket(bucket, "Key's bucket")
    _check_key(key, "Key")
    return ObjectEvent(
        bucket=bucket,
        key=key,
        event_name=event_name,
        size=None,
        etag=None,
        version_id=None,
        sequencer=None,
    )


def _required_str(record: Mapping[str, Any], path: tuple[str, ...], where: str) -> str:
    node: object = record
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    if not isinstance(node, str) or not node:
        raise MalformedEvent(f"{where}: {'.'.join(path)} is missing or not a non-empty string")
    return node


def _optional_str(obj: Mapping[str, Any], field: str, where: str) -> str | None:
    value = obj.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedEvent(f"{where}: s3.object.{field} must be a string")
    _check_text(value, f"{where}: s3.object.{field}", MAX_TOKEN_BYTES)
    return value


def _optional_size(obj: Mapping[str, Any], where: str) -> int | None:
    size = obj.get("size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise MalformedEvent(f"{where}: s3.object.size must be a non-negative integer")
    if size > MAX_OBJECT_BYTES:
        raise MalformedEvent(f"{where}: s3.object.size is larger than {MAX_OBJECT_BYTES} bytes")
    return size


def _check_text(value: str, field: str, max_bytes: int) -> None:
    """Valid Unicode, no control character, at most ``max_bytes`` as UTF-8."""
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedEvent(f"{field} is not valid Unicode") from None
    if _CONTROL.search(value):
        raise MalformedEvent(f"{field} contains a control character")
    if len(encoded) > max_bytes:
        raise MalformedEvent(f"{field} is longer than {max_bytes} bytes")


def _check_bucket(name: str, field: str) -> None:
    _check_text(name, field, MAX_NAME_BYTES)
    if "/" in name:
        raise MalformedEvent(f"{field} contains a '/'")


def _check_key(key: str, field: str) -> None:
    if not key:
        raise MalformedEvent(f"{field} is empty")
    if "\x00" in key:
        raise MalformedEvent(f"{field} contains a NUL character")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedEvent(f"{field} is not valid Unicode") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise MalformedEvent(f"{field} is longer than {MAX_KEY_BYTES} bytes")


def _strip_quotes(etag: str) -> str | None:
    if len(etag) >= 2 and etag[0] == '"' and etag[-1] == '"':
        etag = etag[1:-1]
    return etag or None
