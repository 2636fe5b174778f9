"""Open Inference Protocol datatypes and their numpy equivalents, plus the BYTES wire format."""

from __future__ import annotations

import struct

import numpy as np

from service.errors import InvalidInput

NUMPY_DTYPES: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_V2_BY_KIND = {dtype: name for name, dtype in NUMPY_DTYPES.items()}

# Wire format is little-endian; these are what we accept and emit.
_LITTLE = {name: dtype.newbyteorder("<") for name, dtype in NUMPY_DTYPES.items()}


def numpy_dtype(datatype: str) -> np.dtype[np.generic]:
    try:
        return _LITTLE[datatype]
    except KeyError:
        raise InvalidInput(f"unsupported datatype {datatype!r}") from None


def v2_datatype(array: np.ndarray) -> str:
    name = _V2_BY_KIND.get(array.dtype)  # native byte order: no new dtype to build
    if name is not None:
        return name
    if array.dtype == np.object_:
        return "BYTES"
    try:
        return _V2_BY_KIND[array.dtype.newbyteorder("=")]
    except KeyError:
        raise InvalidInput(f"no Open Inference Protocol datatype for {array.dtype}") from None


def element_count(shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def decode_bytes_elements(raw: bytes | memoryview, count: int) -> list[bytes]:
    """Split the BYTES binary format (4-byte little-endian length + payload, repeated)."""
    view = memoryview(raw)
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidInput("truncated BYTES tensor: incomplete length prefix")
        (size,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + size > len(view):
            raise InvalidInput("truncated BYTES tensor: element longer than the data")
        if len(items) == count:  # stop at the first element the shape has no room for
            raise InvalidInput(f"BYTES tensor holds more than {count} elements, shape says {count}")
        items.append(bytes(view[offset : offset + size]))
        offset += size
    if len(items) != count:
        raise InvalidInput(f"BYTES tensor holds {len(items)} elements, shape says {count}")
    return items


def encode_bytes_elements(items: list[bytes]) -> bytes:
    parts: list[bytes] = []
    for item in items:
        parts.append(struct.pack("<I", len(item)))
        parts.append(item)
    return b"".join(parts)
