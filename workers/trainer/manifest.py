"""Reading NeMo manifests and the audio they point at.

One JSON object a line: ``audio_filepath``, ``offset``, ``duration``, ``text``,
``lang``, ``audio_id`` (the format ``ai2text dataset freeze`` writes). Both
trainers read them here (``read_clips``; the reference trainer's ``read_manifest``
normalises the text). Every line is checked and every audio file is looked for
before training starts, so a bad manifest fails in a second instead of after an
hour of steps.

Only local files are read. Frozen versions in object storage name their audio
by object key (``audio/sha256/…``, older ones by ``s3://…`` or the store's
path); ``ai2text dataset freeze --materialize DIR`` copies it next to manifests
that point at the copies. A relative path is taken relative to the manifest's
own directory, as NeMo does.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from pipeline.errors import Ai2TextError, RejectedInput
from pipeline.media import decode_mono_16k
from workers.trainer.text import encode, normalize

log = structlog.get_logger(__name__)

SAMPLE_RATE = 16_000
# Whisper's segment ends may run a little past the end of the file.
_OVERSHOOT_TOLERANCE_S = 0.5
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
MATERIALIZE_HINT = (
    "the reference trainer reads local files only: run"
    " `ai2text dataset freeze --materialize DIR` and pass the manifests it writes in DIR"
)


class ManifestError(Ai2TextError):
    """A manifest, or the audio it names, cannot be used for training."""


@dataclass(frozen=True, slots=True)
class Clip:
    """One manifest line, checked: a slice of a local audio file and what is said in it."""

    audio_path: Path
    offset: float
    duration: float
    text: str
    """As written (case, punctuation, any script), white space folded: Whisper's tokenizer
    takes it all; the reference trainer normalises it (``Utterance``)."""
    language: str | None
    audio_id: str
    where: str
    """``manifest:line``, for error messages."""


@dataclass(frozen=True, slots=True)
class Utterance:
    audio_path: Path
    offset: float
    duration: float
    text: str
    """The transcript normalised to the vocabulary (see ``workers.trainer.text``)."""
    target: tuple[int, ...]
    audio_id: str
    where: str
    """``manifest:line``, for error messages."""


@dataclass(frozen=True, slots=True)
class Manifest:
    location: str
    utterances: tuple[Utterance, ...]
    skipped_empty_text: int
    """Lines whose transcript has no character of the vocabulary left (e.g. all digits)."""


def read_clips(location: str | Path, *, base_dir: Path | None = None) -> list[Clip]:
    """Parse and check every line, and look for every audio file; ManifestError names a
    bad one by file and line. Relative audio paths are taken from ``base_dir`` (default:
    the manifest's own directory)."""
    if _URL.match(str(location)):
        raise ManifestError(f"manifest {location} is not a local file; {MATERIALIZE_HINT}")
    path = Path(location)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from exc
    root = base_dir or _audio_root(path, lines)
    clips: list[Clip] = []
    seen_files: set[Path] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        clip = _parse_line(line, root, f"{path}:{number}")
        if clip.audio_path not in seen_files:
            if not clip.audio_path.is_file():
                raise ManifestError(_not_found(clip, path))
            seen_files.add(clip.audio_path)
        clips.append(clip)
    return clips


def _audio_root(manifest: Path, lines: list[str]) -> Path:
    """Where the manifest's relative audio paths start: its own directory, or, for a
    frozen version read in place from a local object store (``dataset.json`` beside
    it), the store's root, the nearest directory above that holds its first audio key.

    The orchestrator hands a command trainer such a version when nothing is
    materialised; its ``audio_filepath`` values are object keys, relative to the store.
    """
    own = manifest.parent
    if not (own / "dataset.json").is_file():
        return own
    key = _first_relative_audio(lines)
    if key is None or (own / key).is_file():
        return own
    for ancestor in own.parents:
        if (ancestor / key).is_file():
            return ancestor
    return own


def _first_relative_audio(lines: list[str]) -> str | None:
    for line in lines:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            return None  # reported with its line by the parse
        raw = entry.get("audio_filepath") if isinstance(entry, dict) else None
        if not isinstance(raw, str) or _URL.match(raw) or Path(raw).is_absolute():
            return None
        return raw
    return None


def read_manifest(location: str) -> Manifest:
    """The reference trainer's utterances: ``read_clips`` with the text normalised."""
    utterances: list[Utterance] = []
    skipped = 0
    for clip in read_clips(location):
        text = normalize(clip.text)
        target = encode(text)
        if not target:
            skipped += 1
            continue
        utterances.append(
            Utterance(
                audio_path=clip.audio_path,
                offset=clip.offset,
                duration=clip.duration,
                text=text,
                target=target,
                audio_id=clip.audio_id,
                where=clip.where,
            )
        )
    return Manifest(location, tuple(utterances), skipped)


def _not_found(clip: Clip, manifest: Path) -> str:
    message = f"{clip.where}: audio file not found: {clip.audio_path}"
    if (manifest.parent / "dataset.json").is_file():
        # A frozen version read in place: its audio_filepath values are object keys.
        message += f" (a frozen version names audio by object key; {MATERIALIZE_HINT})"
    return message


def _parse_line(line: str, root: Path, where: str) -> Clip:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{where}: not a JSON object ({exc.msg})") from None
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: not a JSON object")
    raw_path = _field(entry, "audio_filepath", str, where)
    if _URL.match(raw_path):
        raise ManifestError(f"{where}: audio_filepath {raw_path} is remote; {MATERIALIZE_HINT}")
    audio_path = Path(raw_path)
    if not audio_path.is_absolute():
        audio_path = root / audio_path
    offset = float(_field(entry, "offset", (int, float), where, default=0.0))
    duration = float(_field(entry, "duration", (int, float), where))
    if not (math.isfinite(offset) and offset >= 0):
        raise ManifestError(f"{where}: offset must be a number >= 0, not {offset}")
    if not (math.isfinite(duration) and duration > 0):
        raise ManifestError(f"{where}: duration must be a number > 0, not {duration}")
    language = _field(entry, "lang", str, where, default=None, nullable=True)
    audio_id = entry.get("audio_id")
    return Clip(
        audio_path=audio_path.resolve(),
        offset=offset,
        duration=duration,
        text=" ".join(_field(entry, "text", str, where).split()),
        language=language or None,
        audio_id=str(audio_id) if audio_id is not None else raw_path,
        where=where,
    )


_MISSING = object()


def _field(
    entry: dict[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    where: str,
    default: Any = _MISSING,
    *,
    nullable: bool = False,
) -> Any:
    value = entry.get(name, default)
    if value is _MISSING:
        raise ManifestError(f"{where}: missing field {name!r}")
    if value is None and nullable:
        return None
    # bool is an int to isinstance; a duration of true is still a mistake.
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ManifestError(f"{where}: field {name!r} has the wrong type ({type(value).__name__})")
    return value


class AudioCache:
    """Decoded 16 kHz mono audio of recently used files, least recently used dropped first.

    A file cut into many utterances is decoded once while it stays in the cache;
    the bound keeps memory flat (one hour of audio is about 230 MB as float32)
    when a dataset is larger than the small ones this trainer is meant for.
    """

    def __init__(self, *, max_files: int = 64) -> None:
        self._max_files = max_files
        self._files: OrderedDict[Path, npt.NDArray[np.float32]] = OrderedDict()
        self.decoded_files = 0

    def samples(self, path: Path) -> npt.NDArray[np.float32]:
        cached = self._files.get(path)
        if cached is not None:
            self._files.move_to_end(path)
            return cached
        try:
            with open(path, "rb") as f:
                audio = decode_mono_16k(f)
        except RejectedInput as exc:
            raise ManifestError(f"{path}: cannot decode audio: {exc.reason}") from exc
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read audio: {exc}") from exc
        if audio.size == 0:
            raise ManifestError(f"{path}: the file holds no decodable audio")
        self.decoded_files += 1
        self._files[path] = audio
        if len(self._files) > self._max_files:
            self._files.popitem(last=False)
        return audio

    def clip(self, utterance: Clip | Utterance) -> npt.NDArray[np.float32]:
        """The samples of ``[offset, offset + duration]``; a small overshoot is cut off."""
        audio = self.samples(utterance.audio_path)
        start = round(utterance.offset * SAMPLE_RATE)
        end = start + round(utterance.duration * SAMPLE_RATE)
        available = audio.shape[0] / SAMPLE_RATE
        if end - audio.shape[0] > _OVERSHOOT_TOLERANCE_S * SAMPLE_RATE:
            raise ManifestError(
                f"{utterance.where}: offset {utterance.offset:g} s + duration"
                f" {utterance.duration:g} s runs past the end of {utterance.audio_path}"
                f" ({available:.2f} s long)"
            )
        clipped = audio[start:end]
        if clipped.shape[0] == 0:
            raise ManifestError(f"{utterance.where}: the slice holds no audio")
        return clipped
