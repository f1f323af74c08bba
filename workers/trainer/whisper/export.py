"""Writing a trained model back as a CTranslate2 directory faster-whisper loads.

The conversion is ctranslate2's own ``TransformersConverter``, handed the model
in memory (no Hugging Face checkpoint is written and read back) and the base's
``tokenizer.json`` as the tokenizer; its Whisper loader fuses the projections,
adds the timestamp tokens to the vocabulary and reads suppressed tokens,
language ids and alignment heads from the generation config ``mapping`` set.
The tokenizer and feature-extractor files are copied from the base directory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import structlog
import transformers
from ctranslate2.converters import TransformersConverter
from transformers import WhisperForConditionalGeneration

from pipeline.errors import Ai2TextError
from workers.trainer.whisper.ct2 import read_model
from workers.trainer.whisper.mapping import Trainable

log = structlog.get_logger(__name__)

# Copied from the base directory when it has them.
SIDECARS = ("tokenizer.json", "preprocessor_config.json")
QUANTIZATIONS = ("float16", "float32", "int8", "int8_float16", "int8_float32", "bfloat16")


class ExportError(Ai2TextError):
    """The converter refused the model or could not write the directory."""


class _InMemory(TransformersConverter):  # type: ignore[misc]
    """The converter, given the model and tokenizer instead of a checkpoint to load."""

    def __init__(self, checkpoint: str, model: WhisperForConditionalGeneration, tokenizer: Any):
        super().__init__(checkpoint)
        self._model = model
        self._tokenizer = tokenizer

    def load_model(self, model_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
        return self._model

    def load_tokenizer(self, tokenizer_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
        return self._tokenizer


def base_quantization(model_dir: Path) -> str:
    """The dtype the base directory's weights are stored in (``float16`` for the bundled ones)."""
    weights = read_model(model_dir).variables.get("decoder/embeddings/weight")
    kind = str(weights.dtype) if weights is not None else "float16"
    return kind if kind in QUANTIZATIONS else "float16"


def export(trainable: Trainable, out_dir: Path, *, quantization: str = "float16") -> Path:
    """Convert ``trainable.model`` into the new directory ``out_dir``; returns it."""
    model = trainable.model
    model.eval()  # type: ignore[no-untyped-call]
    verbosity = transformers.logging.get_verbosity()
    # The converter reads the config's deprecated torch_dtype, which transformers logs.
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        _convert(trainable, out_dir, quantization)
    finally:
        transformers.logging.set_verbosity(verbosity)
    for name in SIDECARS:
        source = trainable.source / name
        if source.is_file():
            shutil.copyfile(source, out_dir / name)
    _check_config(out_dir, trainable.ct2_config)
    log.info("exported", out=str(out_dir), quantization=quantization)
    return out_dir


def _convert(trainable: Trainable, out_dir: Path, quantization: str) -> None:
    model = trainable.model
    with tempfile.TemporaryDirectory(prefix="ai2text-export-") as tmp:
        # The converter starts from AutoConfig.from_pretrained(path): only config.json is read.
        model.config.save_pretrained(tmp)
        converter = _InMemory(tmp, model, trainable.tokens.tokenizer)
        try:
            converter.convert(str(out_dir), quantization=quantization, force=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ExportError(f"cannot convert the trained model to CTranslate2: {exc}") from exc


def _check_config(out_dir: Path, base: dict[str, Any]) -> None:
    """Decoding settings must survive the trip; a difference would change transcripts."""
    written = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    for key in ("suppress_ids", "suppress_ids_begin", "lang_ids", "alignment_heads"):
        if key in base and _plain(written.get(key)) != _plain(base[key]):
            raise ExportError(f"the exported config.json differs from the base's in {key}")


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))
