"""Reading CTranslate2's model.bin, and Whisper's decoder sequences built for training.

The files here are written with the layout CTranslate2's ``ModelSpec._serialize``
uses; the bundled models themselves are read in tests/integration/test_whisper_roundtrip.py.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline.models import resolve_model
from workers.trainer.whisper.ct2 import Ct2FormatError, read_model
from workers.trainer.whisper.tokens import WhisperTokens

# CTranslate2's DataType ids.
FLOAT32, INT8, FLOAT16, BFLOAT16 = 0, 1, 4, 5


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<H", len(raw) + 1) + raw + b"\0"


def _variable(name: str, array: np.ndarray, type_id: int, raw: bytes | None = None) -> bytes:
    data = array.tobytes() if raw is None else raw
    header = _string(name) + struct.pack("<B", array.ndim)
    header += b"".join(struct.pack("<I", d) for d in array.shape)
    return header + struct.pack("<BI", type_id, len(data)) + data


def write_model(
    path: Path, variables: list[bytes], aliases: dict[str, str], *, version: int = 6
) -> Path:
    body = struct.pack("<I", version) + _string("WhisperSpec") + struct.pack("<I", 3)
    body += struct.pack("<I", len(variables)) + b"".join(variables)
    body += struct.pack("<I", len(aliases))
    body += b"".join(_string(a) + _string(t) for a, t in aliases.items())
    path.write_bytes(body)
    return path


def test_read_model_returns_every_variable_with_its_shape_dtype_and_values(tmp_path: Path) -> None:
    weights = np.arange(6, dtype=np.float16).reshape(2, 3) / 4
    bias = np.array([1.5, -2.0], dtype=np.float32)
    quantised = np.array([[1, -2], [3, 127]], dtype=np.int8)
    heads = np.array(6, dtype=np.int16)
    # bfloat16 is the upper half of a float32: 1.0 and -3.0 are exact.
    bf16 = np.array([1.0, -3.0], dtype=np.float32).view(np.uint32) >> 16
    write_model(
        tmp_path / "model.bin",
        [
            _variable("decoder/embeddings/weight", weights, FLOAT16),
            _variable("decoder/layer_0/bias", bias, FLOAT32),
            _variable("encoder/q/weight", quantised, INT8),
            _variable("encoder/num_heads", heads, 3 - 1),  # int16
            _variable("encoder/bf", bf16.astype(np.uint16), BFLOAT16),
        ],
        {"decoder/projection/weight": "decoder/embeddings/weight"},
    )

    model = read_model(tmp_path)  # the directory works as well as the file

    assert (model.spec, model.revision, model.binary_version) == ("WhisperSpec", 3, 6)
    assert list(model.variables) == [
        "decoder/embeddings/weight",
        "decoder/layer_0/bias",
        "encoder/q/weight",
        "encoder/num_heads",
        "encoder/bf",
    ]
    assert model.variables["decoder/embeddings/weight"].dtype == np.float16
    np.testing.assert_array_equal(model.variables["decoder/embeddings/weight"], weights)
    np.testing.assert_array_equal(model.variables["decoder/layer_0/bias"], bias)
    np.testing.assert_array_equal(model.variables["encoder/q/weight"], quantised)
    assert int(model.variables["encoder/num_heads"]) == 6
    np.testing.assert_array_equal(model.variables["encoder/bf"], [1.0, -3.0])
    np.testing.assert_array_equal(model.get("decoder/projection/weight"), weights)


def test_a_truncated_file_is_a_format_error_not_a_crash(tmp_path: Path) -> None:
    path = write_model(
        tmp_path / "model.bin",
        [_variable("w", np.zeros((4, 4), dtype=np.float16), FLOAT16)],
        {},
    )
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(Ct2FormatError, match="truncated"):
        read_model(path)


def test_an_unknown_binary_version_is_refused_by_name(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.bin", [], {}, version=99)
    with pytest.raises(Ct2FormatError, match="binary version 99"):
        read_model(path)


def test_a_byte_count_that_does_not_fit_the_shape_is_refused(tmp_path: Path) -> None:
    bad = _variable("w", np.zeros((2, 2), dtype=np.float16), FLOAT16, raw=b"\0" * 6)
    path = write_model(tmp_path / "model.bin", [bad], {})
    with pytest.raises(Ct2FormatError, match="holds 6 bytes"):
        read_model(path)


def test_a_missing_file_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(Ct2FormatError, match="no CTranslate2 model file"):
        read_model(tmp_path)


@pytest.fixture(scope="module")
def english_tokens() -> WhisperTokens:
    return WhisperTokens.from_model_dir(
        Path(resolve_model("tiny.en")), lang_ids=[], multilingual=False
    )


def test_english_only_sequences_learn_the_first_timestamp_but_not_notimestamps(
    english_tokens: WhisperTokens,
) -> None:
    t = english_tokens
    text = t.text_ids("Hello world.")
    assert t.tokenizer.decode(text) == " Hello world."

    stamped, forced = t.sequence(None, text, 2.5, timestamps=True)
    assert stamped == [t.sot, t.timestamp_begin, *text, t.timestamp_begin + 125, t.eot]
    assert forced == 1

    plain, forced = t.sequence(None, text, 2.5, timestamps=False)
    assert plain == [t.sot, t.notimestamps, *text, t.eot]
    assert forced == 2


def test_timestamps_are_clamped_to_whisper_s_30_second_window(
    english_tokens: WhisperTokens,
) -> None:
    assert english_tokens.timestamp(45.0) == english_tokens.timestamp_begin + 1500
    assert english_tokens.timestamp(0.013) == english_tokens.timestamp_begin + 1
