"""The bundled CTranslate2 models → transformers → CTranslate2, before any training step.

A model read into ``WhisperForConditionalGeneration`` and converted back with
ctranslate2's converter must be the same model: the same weights bit for bit
(float16 widened and narrowed again is exact), the same decoding config and
vocabulary, and so the same transcripts from faster-whisper on real speech.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.models import languages_of, resolve_model
from workers.trainer.whisper.ct2 import read_model
from workers.trainer.whisper.export import base_quantization, export
from workers.trainer.whisper.mapping import load_trainable

DATA = Path(__file__).resolve().parents[1] / "data"

pytestmark = pytest.mark.slow


def round_trip(name: str, out: Path) -> tuple[Path, Path]:
    base = Path(resolve_model(name))
    trainable = load_trainable(base)
    export(trainable, out, quantization=base_quantization(base))
    return base, out


def transcripts(model_dir: Path, files: list[str], language: str) -> list[str]:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2)
    texts = []
    for name in files:
        segments, _ = model.transcribe(str(DATA / name), beam_size=5, language=language)
        texts.append("".join(s.text for s in segments).strip())
    return texts


def assert_same_model(base: Path, out: Path) -> None:
    before, after = read_model(base), read_model(out)
    assert after.spec == before.spec and after.aliases == before.aliases
    # A newer converter may add flags of its own; every variable of the base is there, equal.
    for name, value in before.variables.items():
        assert name in after.variables, name
        assert after.variables[name].dtype == value.dtype, name
        np.testing.assert_array_equal(after.variables[name], value, err_msg=name)
    assert json.loads((out / "config.json").read_text()) == json.loads(
        (base / "config.json").read_text()
    )
    vocabulary = (base / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    assert json.loads((out / "vocabulary.json").read_text(encoding="utf-8")) == vocabulary
    assert (out / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()
    assert languages_of(out) == languages_of(base)


def test_tiny_en_round_trip_is_the_same_model_with_the_same_transcripts(tmp_path: Path) -> None:
    base, out = round_trip("tiny.en", tmp_path / "tiny.en")
    assert_same_model(base, out)
    files = ["jfk.flac", "hotwords.mp3"]
    said = transcripts(out, files, "en")
    assert said == transcripts(base, files, "en")
    assert "ask not what your country can do for you" in said[0].lower().replace(",", "")


def test_base_round_trip_is_the_same_model_with_the_same_transcripts(tmp_path: Path) -> None:
    base, out = round_trip("base", tmp_path / "base")
    assert_same_model(base, out)
    said = transcripts(out, ["speech_de.flac"], "de")
    assert said == transcripts(base, ["speech_de.flac"], "de")
    assert "Berlin" in said[0]
