"""A small writer and reader of the safetensors format, with numpy only.

Layout of a .safetensors file:

    8 bytes          N, the header length, unsigned 64-bit little-endian
    N bytes          UTF-8 JSON object, padded with spaces to make 8 + N a multiple of 8:
                       {"__metadata__": {"key": "value", ...},            (optional, str -> str)
                        "<tensor name>": {"dtype": "F32", "shape": [d0, d1, ...],
                                          "data_offsets": [begin, end]}, ...}
    rest             the byte buffer: each tensor's raw little-endian C-order data at
                     [begin, end) relative to the start of the buffer; the tensors cover the
                     buffer exactly, without gaps or overlaps

The writer is deterministic: tensors are laid out in the order given, the JSON is compact with
keys in insertion order ("__metadata__" first), so the same arrays give the same bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

# safetensors dtype names and their little-endian numpy equivalents.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAME_OF_KIND = {(dt.kind, dt.itemsize): name for name, dt in DTYPES.items()}

MAX_HEADER_BYTES = 100_000_000


def _dtype_name(dtype: np.dtype) -> str:
    name = _NAME_OF_KIND.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise ValueError(f"dtype {dtype} has no safetensors equivalent here")
    return name


def encode(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """The bytes of a safetensors file holding `tensors` (in the given order) and `metadata`."""
    header: dict[str, object] = {}
    if metadata:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("safetensors metadata maps strings to strings")
        header["__metadata__"] = dict(metadata)
    chunks: list[bytes] = []
    offset = 0
    for name, array in tensors.items():
        if name == "__metadata__" or not name:
            raise ValueError(f"invalid tensor name {name!r}")
        array = np.asarray(array)
        dtype_name = _dtype_name(array.dtype)
        data = np.ascontiguousarray(array, dtype=DTYPES[dtype_name]).tobytes(order="C")
        header[name] = {
            "dtype": dtype_name,
            "shape": [int(d) for d in array.shape],
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def decode(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors (in file order, as read-only copies in native numpy arrays) and metadata."""
    if len(blob) < 8:
        raise ValueError("truncated safetensors file: no header length")
    (length,) = struct.unpack("<Q", blob[:8])
    if length > MAX_HEADER_BYTES or 8 + length > len(blob):
        raise ValueError(f"invalid safetensors header length {length}")
    raw_header = blob[8 : 8 + length]
    if not raw_header.startswith(b"{"):
        raise ValueError("safetensors header does not start with '{'")
    header = json.loads(raw_header.decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("safetensors __metadata__ must map strings to strings")
    buffer = memoryview(blob)[8 + length :]
    tensors: dict[str, np.ndarray] = {}
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"tensor {name!r}: entry must have exactly dtype, shape and data_offsets")
        dtype = DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"tensor {name!r}: unsupported dtype {info['dtype']!r}")
        shape = info["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"tensor {name!r}: invalid shape {shape!r}")
        begin, end = info["data_offsets"]
        count = int(np.prod(shape, dtype=np.int64))
        if not (0 <= begin <= end <= len(buffer)) or end - begin != count * dtype.itemsize:
            raise ValueError(f"tensor {name!r}: data_offsets {begin, end} do not fit {info['dtype']}{shape}")
        spans.append((begin, end, name))
        array = np.frombuffer(buffer[begin:end], dtype=dtype, count=count).reshape(shape)
        tensors[name] = array.astype(dtype.newbyteorder("="), copy=True)
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise ValueError(f"tensor {name!r}: the byte buffer has a gap or overlap at {position}")
        position = end
    if position != len(buffer):
        raise ValueError(f"the byte buffer has {len(buffer) - position} trailing bytes")
    return tensors, metadata


def write(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Write a safetensors file; returns the bytes written."""
    blob = encode(tensors, metadata)
    Path(path).write_bytes(blob)
    return blob


def read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file: (tensors, metadata)."""
    return decode(Path(path).read_bytes())


def check_round_trip(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None, blob: bytes) -> None:
    """Raise unless `blob` decodes to exactly these tensors (dtype, shape, bits) and metadata,
    and re-encodes to the same bytes."""
    read_tensors, read_metadata = decode(blob)
    if list(read_tensors) != list(tensors):
        raise AssertionError(f"tensor names differ: {list(read_tensors)} vs {list(tensors)}")
    for name, array in tensors.items():
        array = np.asarray(array)
        got = read_tensors[name]
        if got.shape != array.shape or got.dtype != array.dtype or got.tobytes() != array.tobytes():
            raise AssertionError(f"tensor {name!r} does not round-trip")
    if read_metadata != dict(metadata or {}):
        raise AssertionError("metadata does not round-trip")
    if encode(read_tensors, read_metadata) != blob:
        raise AssertionError("re-encoding gives different bytes")


if __name__ == "__main__":
    # Self-check: python3 ops/models/safetensors_io.py [FILE ...] prints each file's tensors.
    import sys

    if len(sys.argv) > 1:
        for arg in sys.argv[1:]:
            found, meta = read(Path(arg))
            print(f"{arg}: metadata {meta}")
            for key, value in found.items():
                print(f"  {key}: {_dtype_name(value.dtype)} {list(value.shape)}")
    else:
        rng = np.random.default_rng(0)
        sample = {
            "a": rng.standard_normal((3, 5)).astype(np.float32),
            "b": np.arange(7, dtype=np.int64),
            "c": np.zeros((0, 4), dtype=np.float64),
            "d": np.array([True, False]),
        }
        encoded = encode(sample, {"k": "v"})
        check_round_trip(sample, {"k": "v"}, encoded)
        assert (8 + int.from_bytes(encoded[:8], "little")) % 8 == 0
        print("safetensors round trip ok")
