"""Reading a CTranslate2 ``model.bin``: its variables as numpy arrays, by name.

The file is little-endian and small to describe (CTranslate2's
``ModelSpec._serialize`` writes it, its C++ ``models::Model::load`` reads it)::

    u32 binary version (6)
    string spec name ("WhisperSpec"), u32 spec revision
    u32 variable count, then for each:
        string name, u8 rank, rank x u32 dims, u8 dtype id, u32 byte count, data
    u32 alias count, then for each: string alias, string variable name

A string is a u16 length that counts a trailing NUL, the UTF-8 bytes, the NUL.
Variables are read one at a time into their own arrays, so memory is the size of
the weights and not twice that.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from pipeline.errors import Ai2TextError

MODEL_FILE = "model.bin"
SUPPORTED_BINARY_VERSIONS = (5, 6)
# Index = CTranslate2's DataType id (include/ctranslate2/types.h).
_DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
# Stored as raw 16-bit words; turned into float32 by ``_bfloat16_to_float32``.
_STORAGE = {"bfloat16": np.dtype("<u2")}


class Ct2FormatError(Ai2TextError):
    """A ``model.bin`` this reader cannot use: truncated, unknown version or dtype."""


@dataclass(frozen=True, slots=True)
class Ct2Model:
    spec: str
    revision: int
    binary_version: int
    variables: dict[str, npt.NDArray[np.generic]]
    """By name, in file order; bfloat16 ones already widened to float32."""
    aliases: dict[str, str]
    """Alias -> the variable it stands for (shared weights)."""

    def get(self, name: str) -> npt.NDArray[np.generic]:
        """The variable ``name``, following an alias; KeyError when neither exists."""
        return self.variables[self.aliases.get(name, name)]


def read_model(path: Path) -> Ct2Model:
    """Parse ``path`` (a ``model.bin`` or the directory holding one)."""
    if path.is_dir():
        path = path / MODEL_FILE
    try:
        with path.open("rb") as f:
            return _read(f, str(path))
    except FileNotFoundError:
        raise Ct2FormatError(f"no CTranslate2 model file at {path}") from None
    except struct.error as exc:
        raise Ct2FormatError(f"{path} is truncated or not a CTranslate2 model ({exc})") from exc


def _read(f: BinaryIO, where: str) -> Ct2Model:
    version = _u32(f)
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise Ct2FormatError(
            f"{where}: CTranslate2 binary version {version} is not supported"
            f" (known: {', '.join(map(str, SUPPORTED_BINARY_VERSIONS))})"
        )
    spec = _string(f)
    revision = _u32(f)
    variables: dict[str, npt.NDArray[np.generic]] = {}
    for _ in range(_u32(f)):
        name = _string(f)
        (rank,) = _unpack(f, "<B")
        shape = _unpack(f, f"<{rank}I") if rank else ()
        (type_id,) = _unpack(f, "<B")
        if type_id >= len(_DTYPES):
            raise Ct2FormatError(f"{where}: variable {name} has unknown dtype id {type_id}")
        dtype_name = _DTYPES[type_id]
        dtype = _STORAGE[dtype_name] if dtype_name in _STORAGE else np.dtype(dtype_name)
        dtype = dtype.newbyteorder("<")
        size = _u32(f)
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size != expected:
            raise Ct2FormatError(
                f"{where}: variable {name} holds {size} bytes, its shape {shape} needs {expected}"
            )
        data = f.read(size)
        if len(data) != size:
            raise Ct2FormatError(f"{where}: truncated in variable {name}")
        array = np.frombuffer(data, dtype=dtype).reshape(shape)
        if dtype_name == "bfloat16":
            array = _bfloat16_to_float32(array)
        variables[name] = array
    aliases = {}
    for _ in range(_u32(f)):
        alias = _string(f)
        aliases[alias] = _string(f)
    unknown = sorted(t for t in aliases.values() if t not in variables)
    if unknown:
        raise Ct2FormatError(f"{where}: aliases name missing variables: {', '.join(unknown)}")
    return Ct2Model(spec, revision, version, variables, aliases)


def _bfloat16_to_float32(words: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
    widened = words.astype(np.uint32) << 16
    return widened.view(np.float32)


def _unpack(f: BinaryIO, fmt: str) -> tuple[int, ...]:
    size = struct.calcsize(fmt)
    return struct.unpack(fmt, f.read(size))


def _u32(f: BinaryIO) -> int:
    return _unpack(f, "<I")[0]


def _string(f: BinaryIO) -> str:
    (length,) = _unpack(f, "<H")
    raw = f.read(length)
    if len(raw) != length or not raw.endswith(b"\0"):
        raise Ct2FormatError("a string in the model file is truncated")
    return raw[:-1].decode("utf-8")
