"""Whisper's special tokens and the decoder sequences training uses, from ``tokenizer.json``.

A multilingual model's sequence is ``<|startoftranscript|> <|xx|> <|transcribe|>``
then either ``<|notimestamps|> text <|endoftext|>`` or ``<|0.00|> text <|t|>
<|endoftext|>`` with ``t`` the utterance's length: faster-whisper decodes with
timestamps by default, so the model is trained both ways. English-only models
have no language and task tokens. Timestamp tokens are not in ``tokenizer.json``:
they follow ``<|notimestamps|>``, one per 0.02 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from pipeline.errors import Ai2TextError

TIMESTAMP_STEP_S = 0.02
MAX_TIMESTAMP_S = 30.0


class TokenizerError(Ai2TextError):
    """The model directory's tokenizer lacks a token Whisper needs."""


@dataclass(frozen=True, slots=True)
class WhisperTokens:
    tokenizer: Tokenizer
    eot: int
    sot: int
    transcribe: int
    notimestamps: int
    languages: dict[str, int]
    """Language code -> its token id (``"en"`` -> ``<|en|>``)."""
    multilingual: bool

    @property
    def timestamp_begin(self) -> int:
        return self.notimestamps + 1

    @classmethod
    def from_model_dir(
        cls, model_dir: Path, *, lang_ids: list[int], multilingual: bool
    ) -> WhisperTokens:
        path = model_dir / "tokenizer.json"
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception
            raise TokenizerError(f"cannot read {path}: {exc}") from exc

        def need(token: str) -> int:
            found = tokenizer.token_to_id(token)
            if found is None:
                raise TokenizerError(f"{path} has no {token} token; is it a Whisper tokenizer?")
            return int(found)

        wanted = set(lang_ids)
        languages = {
            token[2:-2]: index
            for token, index in tokenizer.get_vocab(with_added_tokens=True).items()
            if index in wanted and token.startswith("<|") and token.endswith("|>")
        }
        return cls(
            tokenizer=tokenizer,
            eot=need("<|endoftext|>"),
            sot=need("<|startoftranscript|>"),
            transcribe=need("<|transcribe|>"),
            notimestamps=need("<|notimestamps|>"),
            languages=languages,
            multilingual=multilingual,
        )

    def prompt(self, language: str | None) -> list[int]:
        """The tokens faster-whisper forces before the text (with no timestamps token)."""
        if not self.multilingual:
            return [self.sot]
        if language is None or language not in self.languages:
            raise TokenizerError(f"the model has no language token for {language!r}")
        return [self.sot, self.languages[language], self.transcribe]

    def text_ids(self, text: str) -> list[int]:
        """The text's tokens as Whisper writes them: with a leading space."""
        return list(self.tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids)

    def timestamp(self, seconds: float) -> int:
        clamped = min(max(seconds, 0.0), MAX_TIMESTAMP_S)
        return self.timestamp_begin + round(clamped / TIMESTAMP_STEP_S)

    def sequence(
        self, language: str | None, text_ids: list[int], duration: float, *, timestamps: bool
    ) -> tuple[list[int], int]:
        """The full decoder sequence and how many leading tokens are forced (no loss).

        With ``timestamps`` the first timestamp is predicted by the model (faster-whisper
        only constrains it), so it is not forced; ``<|notimestamps|>`` is.
        """
        prompt = self.prompt(language)
        if timestamps:
            body = [self.timestamp(0.0), *text_ids, self.timestamp(duration)]
            return [*prompt, *body, self.eot], len(prompt)
        return [*prompt, self.notimestamps, *text_ids, self.eot], len(prompt) + 1
