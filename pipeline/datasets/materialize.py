"""Copy a frozen version's audio to a local directory, for trainers that need files.

The version in object storage is untouched: manifests are rewritten into the
target directory with ``audio_filepath`` (and ``file_name``) pointing at the
local copies. Manifests name audio by object key; versions frozen before
manifests did so name it by the store's path or URL of that key, and both are
recognised.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pipeline.datasets.freeze import MANIFESTS
from pipeline.storage import ObjectStore


def materialize(
    store: ObjectStore, prefix: str, audio_keys: Iterable[str], dest: Path
) -> dict[str, int]:
    """Copy the audio under ``audio_keys`` and rewritten manifests into ``dest``."""
    audio_dir = dest / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    local: dict[str, str] = {}
    for key in audio_keys:
        target = audio_dir / Path(key).name
        if not target.exists():
            fd, tmp = tempfile.mkstemp(dir=audio_dir, prefix=".part-")
            with os.fdopen(fd, "wb") as out:
                store.download(key, out)
            os.replace(tmp, target)
        local[key] = local[store.uri(key)] = str(target.resolve())
    counts: dict[str, int] = {}
    for name in (*MANIFESTS, "dataset.json"):
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=".part-")
        with os.fdopen(fd, "wb") as out:
            store.download(f"{prefix}/{name}", out)
        if name == "dataset.json":
            os.replace(tmp, dest / name)
            continue
        counts[name] = _rewrite(Path(tmp), dest / name, local)
        os.unlink(tmp)
    return counts


def _rewrite(source: Path, target: Path, local: dict[str, str]) -> int:
    lines = 0
    with open(source, encoding="utf-8") as src, open(target, "w", encoding="utf-8") as out:
        for line in src:
            entry = json.loads(line)
            for field in ("audio_filepath", "file_name"):
                if field in entry and entry[field] in local:
                    entry[field] = local[entry[field]]
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
            lines += 1
    return lines
