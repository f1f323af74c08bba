"""ASR engines behind one protocol, chosen by name (``asr.engine``) from a registry.

To add an engine: write a class that satisfies ``Engine`` (one window in, lazily
decoded segments out, ``OutOfMemory`` when a batch does not fit; the languages it
knows and a language guess for a stretch of speech) and register a factory for it
under a new name. Windows, languages per stretch of speech, batch halving and
cancelling come from ``workers.asr`` unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.config import AsrSettings
from pipeline.errors import ConfigError
from workers.engines.base import (
    Engine,
    LanguageGuess,
    OutOfMemory,
    Samples,
    WindowRequest,
    WindowResult,
)

__all__ = [
    "DEFAULT_ENGINE",
    "Engine",
    "EngineFactory",
    "EngineRegistry",
    "LanguageGuess",
    "OutOfMemory",
    "Samples",
    "WindowRequest",
    "WindowResult",
    "build_engine",
    "default_engines",
]

DEFAULT_ENGINE = "faster-whisper"

# Builds an engine (not yet loaded) from the ASR settings and the number of worker
# threads that will share it.
EngineFactory = Callable[[AsrSettings, int], Engine]


class EngineRegistry:
    """Engine factories by name."""

    def __init__(self) -> None:
        self._factories: dict[str, EngineFactory] = {}

    def register(self, name: str, factory: EngineFactory) -> None:
        if name in self._factories:
            raise ValueError(f"an ASR engine named {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def build(self, settings: AsrSettings, *, num_workers: int = 1) -> Engine:
        factory = self._factories.get(settings.engine)
        if factory is None:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f"unknown ASR engine {settings.engine!r} (known: {known})")
        return factory(settings, num_workers)


def _faster_whisper(settings: AsrSettings, num_workers: int) -> Engine:
    # Imported here, so choosing another engine never loads CTranslate2.
    from workers.engines.faster_whisper import FasterWhisperEngine

    return FasterWhisperEngine(settings, num_workers=num_workers)


def default_engines() -> EngineRegistry:
    """A fresh registry holding the engines that ship with ai2text."""
    registry = EngineRegistry()
    registry.register(DEFAULT_ENGINE, _faster_whisper)
    return registry


def build_engine(
    settings: AsrSettings, *, num_workers: int = 1, engines: EngineRegistry | None = None
) -> Engine:
    """The engine ``settings.engine`` names, from ``engines`` (default: the shipped ones)."""
    return (engines or default_engines()).build(settings, num_workers=num_workers)
