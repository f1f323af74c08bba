"""A job's transcription options from its source, its tenant and the request.

A folder or bucket may name a language, a channel layout and a vocabulary; a
tenant may give defaults for all of its sources; an API request may ask for its
own. The most specific choice wins (request, then source, then tenant); the
vocabularies add up. ``asr``'s own settings apply in the worker when nothing is
chosen here.

A language the configured model cannot transcribe is refused here, before any
work, with a reason a person can read: an English-only model asked for German
must say so, not answer in English.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pipeline.config import AsrSettings, TenantSettings, TranscriptionChoices
from pipeline.errors import RejectedInput
from pipeline.models import model_languages

# The options that change what a transcription of the same audio says.
_TRANSCRIPTION_KEYS = (
    "language",
    "prompt",
    "temperature",
    "word_timestamps",
    "vocabulary",
    "channels",
    # "translate" (to English) is another text of the same audio; "transcribe" is unset.
    "task",
    # Another installed model than the workers' default (OpenAI's `model`).
    "model",
)


def transcription_signature(options: dict[str, Any]) -> dict[str, Any]:
    """The options that make two transcriptions of the same audio differ; unset ones dropped."""
    return {
        key: options[key]
        for key in _TRANSCRIPTION_KEYS
        if options.get(key) not in (None, False, "", [], ())
        and not (key == "task" and options[key] == "transcribe")
    }


class UnsupportedLanguage(RejectedInput):
    """The requested language is one the configured model cannot transcribe."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, code="language")


class TranscriptionPolicy:
    """Merges choices into job options and checks languages against the configured model."""

    def __init__(self, asr: AsrSettings, tenants: dict[str, TenantSettings]) -> None:
        self.model = asr.model
        self.cache_dir: Path | None = asr.model_cache_dir
        self.tenants = tenants
        self._languages: tuple[str, ...] | None = None
        self._known = False
        self._lock = threading.Lock()

    @property
    def languages_known(self) -> bool:
        """Whether ``languages()`` is answered from memory (no file read, no assembly)."""
        return self._known

    def languages(self) -> tuple[str, ...] | None:
        """What the configured model transcribes; None when unknown before loading it.

        The first call may assemble a bundled model (a second or so): call it off the
        event loop.
        """
        with self._lock:
            if not self._known:
                self._languages = model_languages(self.model, self.cache_dir)
                self._known = True
            return self._languages

    def check_language(self, language: str | None) -> None:
        """Raise ``UnsupportedLanguage`` if ``language`` is set and the model lacks it."""
        if language is None:
            return
        languages = self.languages()
        if languages is None or language in languages:
            return
        if languages == ("en",):
            raise UnsupportedLanguage(
                f"model {self.model} transcribes English only; language {language!r} was"
                " requested (use the multilingual model 'base' for other languages)"
            )
        raise UnsupportedLanguage(
            f"model {self.model} cannot transcribe language {language!r};"
            f" it knows {len(languages)} languages ({', '.join(languages[:12])}, ...)"
        )

    def options_for(
        self,
        tenant: str,
        source: TranscriptionChoices | None = None,
        request: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The job's options: request over source over tenant; language checked."""
        layers = [self.tenants.get(tenant), source]
        options: dict[str, Any] = {}
        vocabulary: list[str] = []
        for layer in layers:
            if layer is None:
                continue
            if layer.language is not None:
                options["language"] = layer.language
            if layer.channels is not None:
                options["channels"] = layer.channels
            vocabulary.extend(layer.vocabulary)
        for key, value in (request or {}).items():
            if key == "vocabulary":
                vocabulary.extend(value or ())
            elif value is not None:
                options[key] = value
        if vocabulary:
            options["vocabulary"] = list(dict.fromkeys(vocabulary))
        self.check_language(options.get("language"))
        return options
