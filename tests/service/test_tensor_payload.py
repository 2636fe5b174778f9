"""The gateway <-> handler tensor payload (safetensors layout)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from service.backends.tensor_payload import decode_feed, encode_feed
from service.errors import InvalidInput

FEED = {
    "images": np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 1, 3, 4),
    "input_ids": np.array([[101, 7, 0]], dtype=np.int64),
    "mask": np.array([[True, False]]),
    "scores": np.array([[0.5, -1.25]], dtype=">f4"),  # big-endian in, little-endian on the wire
    "empty": np.zeros((0, 3), dtype=np.float32),
}


def test_round_trip_keeps_names_dtypes_shapes_and_values() -> None:
    decoded = decode_feed(encode_feed(FEED))
    assert list(decoded) == list(FEED)
    for name, array in FEED.items():
        assert decoded[name].shape == array.shape
        assert decoded[name].dtype == array.dtype.newbyteorder("<")
        np.testing.assert_array_equal(decoded[name], array)


def test_header_is_safetensors_shaped() -> None:
    payload = encode_feed({"features": np.ones((2, 4), dtype=np.float32)})
    (size,) = struct.unpack_from("<Q", payload)
    assert size % 8 == 0
    header = json.loads(payload[8 : 8 + size])
    assert header == {"features": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]}}
    assert len(payload) == 8 + size + 32


def test_the_safetensors_library_reads_and_writes_it() -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    feed = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([[1]], dtype=np.int64)}
    theirs = safetensors_numpy.load(encode_feed(feed))
    np.testing.assert_array_equal(theirs["a"], feed["a"])
    ours = decode_feed(safetensors_numpy.save(feed, metadata={"by": "safetensors"}))
    np.testing.assert_array_equal(ours["b"], feed["b"])


def test_unsupported_dtypes_are_refused() -> None:
    with pytest.raises(InvalidInput, match="unsupported dtype"):
        encode_feed({"text": np.array(["a"], dtype=object)})


def _payload(header: object, data: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + data


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00" * 7,
        struct.pack("<Q", 1 << 40) + b"{}",
        struct.pack("<Q", 4) + b"nope",
        _payload([1, 2]),
        _payload({}),
        _payload({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\x00" * 4),
        _payload({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\x00" * 8),
        _payload({"x": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\x00" * 8),
        _payload({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}),
        _payload({"x": {"dtype": "F32"}}),
    ],
)
def test_malformed_payloads_are_invalid_input(payload: bytes) -> None:
    with pytest.raises(InvalidInput, match="tensor payload"):
        decode_feed(payload)
