"""The utterances of a NeMo manifest as Whisper trains on them: audio slice, text, language.

Same lines as the reference trainer reads (``audio_filepath``, ``offset``,
``duration``, ``text``, ``lang``; see ``workers.trainer.manifest``), but the
text is kept as written: Whisper's tokenizer takes case, punctuation and every
script. Every line is checked and every audio file looked for before anything
runs, so a bad manifest fails at once with its file and line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from workers.trainer.manifest import MATERIALIZE_HINT, SAMPLE_RATE, AudioCache, ManifestError

_OVERSHOOT_TOLERANCE_S = 0.5
_REMOTE = ("s3://", "http://", "https://", "gs://")


@dataclass(frozen=True, slots=True)
class Clip:
    audio_path: Path
    offset: float
    duration: float
    text: str
    language: str | None
    where: str
    """``manifest:line``, for messages."""


def read_clips(location: str | Path, *, base_dir: Path | None = None) -> list[Clip]:
    """Every line of the manifest at ``location``; ManifestError names a bad one."""
    path = Path(location)
    if str(location).startswith(_REMOTE):
        raise ManifestError(f"manifest {location} is not a local file; {MATERIALIZE_HINT}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from exc
    root = base_dir or path.parent
    clips = []
    checked: set[Path] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        clip = _parse(line, root, f"{path}:{number}")
        if clip.audio_path not in checked:
            if not clip.audio_path.is_file():
                raise ManifestError(f"{clip.where}: audio file not found: {clip.audio_path}")
            checked.add(clip.audio_path)
        clips.append(clip)
    return clips


def _parse(line: str, root: Path, where: str) -> Clip:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{where}: not a JSON object ({exc.msg})") from None
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: not a JSON object")
    raw = _field(entry, "audio_filepath", str, where)
    if raw.startswith(_REMOTE):
        raise ManifestError(f"{where}: audio_filepath {raw} is remote; {MATERIALIZE_HINT}")
    audio = Path(raw)
    offset = float(_field(entry, "offset", (int, float), where, default=0.0))
    duration = float(_field(entry, "duration", (int, float), where))
    if not (math.isfinite(offset) and offset >= 0):
        raise ManifestError(f"{where}: offset must be a number >= 0, not {offset}")
    if not (math.isfinite(duration) and duration > 0):
        raise ManifestError(f"{where}: duration must be a number > 0, not {duration}")
    language = entry.get("lang")
    if language is not None and not isinstance(language, str):
        raise ManifestError(f"{where}: field 'lang' has the wrong type ({type(language).__name__})")
    return Clip(
        audio_path=(audio if audio.is_absolute() else root / audio).resolve(),
        offset=offset,
        duration=duration,
        text=" ".join(_field(entry, "text", str, where).split()),
        language=language or None,
        where=where,
    )


def _field(
    entry: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str, default: Any = None
) -> Any:
    value = entry.get(name, default)
    if value is None:
        raise ManifestError(f"{where}: missing field {name!r}")
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ManifestError(f"{where}: field {name!r} has the wrong type ({type(value).__name__})")
    return value


def samples(cache: AudioCache, clip: Clip) -> npt.NDArray[np.float32]:
    """The 16 kHz mono samples of ``clip``; a small overshoot past the end is cut off."""
    audio = cache.samples(clip.audio_path)
    start = round(clip.offset * SAMPLE_RATE)
    end = start + round(clip.duration * SAMPLE_RATE)
    if end - audio.shape[0] > _OVERSHOOT_TOLERANCE_S * SAMPLE_RATE:
        raise ManifestError(
            f"{clip.where}: offset {clip.offset:g} s + duration {clip.duration:g} s runs past"
            f" the end of {clip.audio_path} ({audio.shape[0] / SAMPLE_RATE:.2f} s long)"
        )
    sliced = audio[start:end]
    if sliced.shape[0] == 0:
        raise ManifestError(f"{clip.where}: the slice holds no audio")
    return sliced
