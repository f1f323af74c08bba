"""A job's transcription options from its source, its tenant and the request.

A folder or bucket may name a language, a channel layout and a vocabulary; a
tenant may give defaults for all of its sources; an API request may ask for its
own. The most specific choice wins (request, then source, then tenant); the
vocabularies add up. ``asr``'s own settings apply in the worker when nothing is
chosen here.

A language the job's model cannot transcribe is refused here, before any work,
with a reason a person can read: an English-only model asked for German must say
so, not answer in English.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pipeline.config import AsrSettings, TenantSettings, TranscriptionChoices
from pipeline.datasets.served import model_label
from pipeline.errors import RejectedInput
from pipeline.models import model_languages

# A request key, read for the language check and never kept in the job's options: the
# installed model a registry candidate named by ``model`` was trained from (resolved by
# the caller, which reads the registry; this module reads no database).
TRAINED_FROM = "trained_from"

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
    """The requested language is one the job's model cannot transcribe."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, code="language")


class TranscriptionPolicy:
    """Merges choices into job options and checks languages against the job's model.

    The job's model is its ``model`` option when set, else the configured ``asr.model``.
    A promoted registry model (what a job naming no model runs) is a fine-tune of the
    workers' model, so ``asr.model``'s languages hold for it; a registry candidate is
    checked against the installed model it was trained from (``TRAINED_FROM``). A model
    whose languages cannot be known before loading it is not checked here; the worker
    checks again with the loaded model.
    """

    def __init__(self, asr: AsrSettings, tenants: dict[str, TenantSettings]) -> None:
        self.model = asr.model
        self.cache_dir: Path | None = asr.model_cache_dir
        self.tenants = tenants
        self._languages: dict[str, tuple[str, ...] | None] = {}
        self._lock = threading.Lock()

    @staticmethod
    def checked_model(model: str | None, trained_from: str | None = None) -> str | None:
        """The name whose languages a job asking for ``model`` is checked against.

        None: the configured model.
        """
        return trained_from or model or None

    def knows_languages(self, model: str | None = None) -> bool:
        """Whether ``languages(model)`` is answered from memory (no file read, no assembly)."""
        return (model or self.model) in self._languages

    def ready_for(self, request: dict[str, Any] | None) -> bool:
        """Whether ``options_for`` with this request reads no file: call it on the loop."""
        request = request or {}
        return self.knows_languages(
            self.checked_model(request.get("model"), request.get(TRAINED_FROM))
        )

    def languages(self, model: str | None = None) -> tuple[str, ...] | None:
        """What ``model`` (default: the configured one) transcribes; None when unknown.

        The first call for a name may assemble a bundled model (a second or so): call it
        off the event loop unless ``knows_languages``.
        """
        name = model or self.model
        with self._lock:
            if name not in self._languages:
                self._languages[name] = model_languages(name, self.cache_dir)
            return self._languages[name]

    def check_language(
        self, language: str | None, model: str | None = None, trained_from: str | None = None
    ) -> None:
        """Raise ``UnsupportedLanguage`` if ``language`` is set and the job's model lacks it.

        ``model``: the job's ``model`` option (None: the configured model);
        ``trained_from``: the installed model a registry ``model`` was trained from.
        """
        if language is None:
            return
        languages = self.languages(self.checked_model(model, trained_from))
        if languages is None or language in languages:
            return
        shown = model_label(model or self.model)
        if trained_from and trained_from != model:
            shown += f" (trained from {model_label(trained_from)})"
        if languages == ("en",):
            raise UnsupportedLanguage(
                f"model {shown} transcribes English only; language {language!r} was"
                " requested (use the multilingual model 'base' for other languages)"
            )
        raise UnsupportedLanguage(
            f"model {shown} cannot transcribe language {language!r};"
            f" it knows {len(languages)} languages ({', '.join(languages[:12])}, ...)"
        )

    def options_for(
        self,
        tenant: str,
        source: TranscriptionChoices | None = None,
        request: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The job's options: request over source over tenant; language checked.

        ``request`` may carry ``TRAINED_FROM`` beside ``model``; it is not kept.
        """
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
            if key == TRAINED_FROM:
                continue
            if key == "vocabulary":
                vocabulary.extend(value or ())
            elif value is not None:
                options[key] = value
        if vocabulary:
            options["vocabulary"] = list(dict.fromkeys(vocabulary))
        trained_from = (request or {}).get(TRAINED_FROM)
        self.check_language(options.get("language"), options.get("model"), trained_from)
        return options
