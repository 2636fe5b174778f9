"""The pre-batched tensor payload between the gateway and the TorchServe handlers.

A feed (input or output name -> array, batch first) travels as an uncompressed NumPy `.npz`
archive with Content-Type `application/x-npz`, in both directions. Any NumPy user can read or
write it (`np.savez` / `np.load`); it keeps dtypes and shapes exactly, so no JSON round trip
touches the numbers. Only numpy is imported here: the handlers ship this module in the archive.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping

import numpy as np

from service.errors import InvalidInput
from service.feeds import Feed

CONTENT_TYPE = "application/x-npz"


def encode_feed(feed: Mapping[str, np.ndarray]) -> bytes:
    """Arrays -> uncompressed `.npz` bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.ascontiguousarray(array) for name, array in feed.items()})
    return buffer.getvalue()


def decode_feed(payload: bytes | bytearray | memoryview) -> Feed:
    """`.npz` bytes -> arrays. Refuses compressed members (no zip bombs) and pickled objects."""
    buffer = io.BytesIO(payload)
    try:
        with zipfile.ZipFile(buffer) as archive:
            members = archive.infolist()
        if any(member.compress_type != zipfile.ZIP_STORED for member in members):
            raise InvalidInput("tensor payload members must be stored uncompressed")
        buffer.seek(0)
        with np.load(buffer, allow_pickle=False) as arrays:
            feed = {name: arrays[name] for name in arrays.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
        raise InvalidInput(f"invalid {CONTENT_TYPE} tensor payload: {error}") from None
    if not feed:
        raise InvalidInput("tensor payload holds no arrays")
    return feed
