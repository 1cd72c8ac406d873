"""Read a CTranslate2 `model.bin` into numpy arrays, without CTranslate2.

The format (binary versions 4 to 6) is little-endian:

    u32 binary_version, string spec_name, u32 spec_revision,
    u32 n_variables, then per variable:
        string name, u8 rank, u32 dims[rank], u8 dtype_id, u32 n_bytes, bytes data
    u32 n_aliases, then per alias: string alias, string target

where a string is a u16 length (counting a trailing NUL) followed by that many bytes.
Aliases name one stored variable twice (Whisper's output projection is its token
embedding), so they are resolved to the same array.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The order of CTranslate2's DataType enum (include/ctranslate2/types.h); bfloat16 has no numpy
# type, so it is read as raw 16-bit words and widened to float32.
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_NUMPY = {"float32": "<f4", "int8": "i1", "int16": "<i2", "int32": "<i4", "float16": "<f2", "bfloat16": "<u2"}
SUPPORTED_VERSIONS = (4, 5, 6)


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands."""


@dataclass(frozen=True)
class CT2Model:
    spec: str  # e.g. "WhisperSpec"
    revision: int
    variables: dict[str, np.ndarray]  # aliases included, sharing the target's array


class _Cursor:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> memoryview:
        if self.pos + size > len(self.data):
            raise CT2FormatError(f"truncated at byte {self.pos}: wanted {size} more bytes")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (length,) = self.unpack("H")
        raw = bytes(self.take(length))
        return raw.rstrip(b"\0").decode("utf-8")


def _array(raw: memoryview, dtype: str, dims: tuple[int, ...]) -> np.ndarray:
    values = np.frombuffer(raw, dtype=_NUMPY[dtype])
    if dtype == "bfloat16":
        values = (values.astype(np.uint32) << 16).view(np.float32)
    expected = int(np.prod(dims)) if dims else 1
    if values.size != expected:
        raise CT2FormatError(f"{values.size} values stored for shape {dims}")
    return values.reshape(dims)


def parse_ct2(data: bytes | memoryview) -> CT2Model:
    """Parse the bytes of a model.bin. Arrays are read-only views into `data`."""
    cursor = _Cursor(memoryview(data))
    (version,) = cursor.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise CT2FormatError(f"CTranslate2 binary version {version} is not one of {SUPPORTED_VERSIONS}")
    spec = cursor.string()
    (revision,) = cursor.unpack("I")
    (count,) = cursor.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = cursor.string()
        (rank,) = cursor.unpack("B")
        dims = tuple(cursor.unpack("I" * rank)) if rank else ()
        (type_id,) = cursor.unpack("B")
        if type_id >= len(_DTYPES):
            raise CT2FormatError(f"{name}: unknown dtype id {type_id}")
        (size,) = cursor.unpack("I")
        variables[name] = _array(cursor.take(size), _DTYPES[type_id], dims)
    (n_aliases,) = cursor.unpack("I")
    for _ in range(n_aliases):
        alias, target = cursor.string(), cursor.string()
        if target not in variables:
            raise CT2FormatError(f"alias {alias} points at missing variable {target}")
        variables[alias] = variables[target]
    return CT2Model(spec=spec, revision=revision, variables=variables)


def read_ct2(path: Path) -> CT2Model:
    return parse_ct2(Path(path).read_bytes())


def write_ct2(path: Path, spec: str, revision: int, variables: dict[str, np.ndarray],
              aliases: dict[str, str] | None = None) -> None:
    """The inverse of parse_ct2, for tests that need a small model.bin."""
    def string(text: str) -> bytes:
        raw = text.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", 6), string(spec), struct.pack("<II", revision, len(variables))]
    for name, value in sorted(variables.items()):
        value = np.asarray(value)
        out += [string(name), struct.pack("<B", value.ndim), struct.pack(f"<{value.ndim}I", *value.shape),
                struct.pack("<B", _DTYPES.index(value.dtype.name)), struct.pack("<I", value.nbytes),
                value.astype(value.dtype.newbyteorder("<")).tobytes()]
    aliases = aliases or {}
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [string(alias), string(target)]
    Path(path).write_bytes(b"".join(out))
