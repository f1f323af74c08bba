"""Manifests as the API serves them: audio named by object key, never by a server path.

Versions frozen before manifests named audio by key hold the store's path or URL
of each file (``/srv/ai2text/objects/audio/sha256/ab/….flac``,
``s3://bucket/audio/…``). Such lines are rewritten on the way out to name the
object key; every other line passes through byte for byte, so a current
version is served exactly as its ``manifest_sha256`` describes it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path, PurePosixPath

PATH_FIELDS = ("audio_filepath", "file_name")

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CONTENT_KEY = re.compile(r"(?:^|/)(audio/sha256/[0-9a-f]{2}/[0-9a-f]{64}(?:\.[A-Za-z0-9]+)?)$")


def object_key_of(value: str) -> str:
    """``value`` if it is relative; else the content key it ends in, or its file name."""
    if not (value.startswith("/") or _URL.match(value)):
        return value
    match = _CONTENT_KEY.search(value)
    return match.group(1) if match else PurePosixPath(value).name


def served_line(line: bytes) -> bytes:
    """One manifest line with any server path or URL replaced by its object key."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line  # nothing we wrote; it names no path we know of
    if not isinstance(entry, dict):
        return line
    changed = False
    for field in PATH_FIELDS:
        value = entry.get(field)
        if isinstance(value, str) and object_key_of(value) != value:
            entry[field] = object_key_of(value)
            changed = True
    if not changed:
        return line
    return json.dumps(entry, ensure_ascii=False).encode("utf-8") + b"\n"


def make_servable(path: Path) -> None:
    """Rewrite the manifest at ``path`` in place so that it names no server path."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".served-")
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as out:
            for line in src:
                out.write(served_line(line))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
