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
    """Arrays -> uncompressed `.npz` bytes (what `np.savez` writes, without its keyword clashes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in feed.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def decode_feed(payload: bytes | bytearray | memoryview) -> Feed:
    """`.npz` bytes -> arrays. Refuses compressed members (no zip bombs) and pickled objects."""
    feed: Feed = {}
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            for member in archive.infolist():
                if member.compress_type != zipfile.ZIP_STORED:
                    raise InvalidInput("tensor payload members must be stored uncompressed")
                if not member.filename.endswith(".npy"):
                    raise InvalidInput(f"tensor payload member {member.filename!r} is not .npy")
                with archive.open(member) as data:
                    feed[member.filename[:-4]] = np.lib.format.read_array(data, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise InvalidInput(f"invalid {CONTENT_TYPE} tensor payload: {error}") from None
    if not feed:
        raise InvalidInput("tensor payload holds no arrays")
    return feed
