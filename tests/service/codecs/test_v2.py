"""V2 codec: JSON and binary round trips (property-based) and malformed inputs."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from service.codecs import v2
from service.datatypes import encode_bytes_elements
from service.errors import InvalidInput
from service.input_limits import Limits

NUMERIC = {
    "FP32": np.float32,
    "FP64": np.float64,
    "INT64": np.int64,
    "INT32": np.int32,
    "UINT8": np.uint8,
    "INT8": np.int8,
    "FP16": np.float16,
    "BOOL": np.bool_,
}
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5)


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    datatype = draw(st.sampled_from(sorted(NUMERIC)))
    array = draw(
        hnp.arrays(
            NUMERIC[datatype],
            shapes,
            elements={"allow_nan": False, "allow_infinity": False}
            if datatype.startswith("FP")
            else None,
        )
    )
    return datatype, array


def binary_request(named: list[tuple[str, str, np.ndarray]], binary_out: bool) -> tuple[bytes, str]:
    inputs, blobs = [], []
    for name, datatype, array in named:
        blob = array.tobytes()
        inputs.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    header = orjson.dumps({"inputs": inputs, "parameters": {"binary_data_output": binary_out}})
    return header + b"".join(blobs), str(len(header))


@settings(max_examples=60, deadline=None)
@given(tensors())
def test_json_round_trip(case: tuple[str, np.ndarray]) -> None:
    datatype, array = case
    body = orjson.dumps(
        {
            "id": "x",
            "inputs": [
                {
                    "name": "t",
                    "datatype": datatype,
                    "shape": list(array.shape),
                    "data": array.ravel().tolist(),
                }
            ],
        }
    )
    request = v2.decode_request(body, None)
    decoded = request.inputs[0].data
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)
    payload, header_length = v2.encode_response(
        model_name="m", model_version="1", request=request, outputs={"t": decoded}
    )
    assert header_length is None
    output = orjson.loads(payload)["outputs"][0]
    assert output["shape"] == list(array.shape)
    assert output["datatype"] == datatype
    np.testing.assert_array_equal(
        np.asarray(output["data"], dtype=array.dtype).reshape(array.shape), array
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(tensors(), min_size=1, max_size=3))
def test_binary_round_trip(cases: list[tuple[str, np.ndarray]]) -> None:
    named = [(f"t{i}", datatype, array) for i, (datatype, array) in enumerate(cases)]
    body, header_length = binary_request(named, binary_out=True)
    request = v2.decode_request(body, header_length)
    outputs = {tensor.name: tensor.data for tensor in request.inputs}
    for (_, _, array), tensor in zip(named, request.inputs, strict=True):
        np.testing.assert_array_equal(tensor.data, array)
    payload, length = v2.encode_response(
        model_name="m", model_version="1", request=request, outputs=outputs
    )
    assert length is not None
    header = orjson.loads(payload[:length])
    offset = length
    for (_, _, array), output in zip(named, header["outputs"], strict=True):
        size = output["parameters"]["binary_data_size"]
        restored = np.frombuffer(payload[offset : offset + size], dtype=array.dtype)
        np.testing.assert_array_equal(restored.reshape(array.shape), array)
        offset += size
    assert offset == len(payload)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=20), min_size=1, max_size=5))
def test_bytes_tensor_binary_round_trip(items: list[bytes]) -> None:
    blob = encode_bytes_elements(items)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [len(items)],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
    )
    request = v2.decode_request(header + blob, str(len(header)))
    assert list(request.inputs[0].data) == items


def framed(header: bytes, tail: bytes) -> tuple[bytes, str]:
    return header + tail, str(len(header))


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"[1, 2]", None, "JSON object"),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [2], "data": [1]}]}',
            None,
            "elements",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [-1], "data": []}]}',
            None,
            "shape",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": ["x"]}]}',
            None,
            "datatype",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "WAT", "shape": [1], "data": [1]}]}',
            None,
            "datatype",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]},'
            b'{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            None,
            "twice",
        ),
        (
            *framed(
                b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [4],'
                b'"parameters": {"binary_data_size": 16}}]}',
                b"\0" * 8,
            ),
            "truncated",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "UINT8", "shape": [2], "data": [1, 300]}]}',
            None,
            "does not fit datatype UINT8",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [2], "data": [1, [2]]}]}',
            None,
            "does not fit datatype FP32",
        ),
        (b'{"inputs": []}', "9999", "does not fit"),
        (b'{"inputs": []}', "abc", "integer"),
        (
            *framed(
                b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1],'
                b'"parameters": {"binary_data_size": 4}}]}',
                b"\0" * 6,
            ),
            "belong to no input",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [100000, 100000, 100000]}]}',
            None,
            "larger than",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}],'
            b'"parameters": {"timeout": -5}}',
            None,
            None,
        ),
    ],
)
def test_malformed_requests(body: bytes, header_length: str | None, message: str | None) -> None:
    def decode_and_read_timeout() -> None:
        _ = v2.decode_request(body, header_length).timeout_ms

    with pytest.raises(InvalidInput, match=message):
        decode_and_read_timeout()


def test_flat_and_nested_json_data_decode_alike() -> None:
    def decoded(data: list[object]) -> np.ndarray:
        tensor = {"name": "a", "datatype": "UINT8", "shape": [2, 2], "data": data}
        return v2.decode_request(orjson.dumps({"inputs": [tensor]}), None).inputs[0].data

    np.testing.assert_array_equal(decoded([1, 2, 3, 4]), decoded([[1, 2], [3, 4]]))
    assert decoded([1, 2, 3, 4]).dtype == np.uint8


def test_unknown_requested_output() -> None:
    request = v2.decode_request(
        b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}],'
        b'"outputs": [{"name": "nope"}]}',
        None,
    )
    with pytest.raises(InvalidInput, match="unknown outputs"):
        v2.encode_response(
            model_name="m",
            model_version="1",
            request=request,
            outputs={"a": np.zeros(1, np.float32)},
        )


@pytest.mark.parametrize("shape", [[0, 2**62], [1] * 65, [0] * 65, [0, 2**26, 2**26]])
def test_shapes_numpy_cannot_hold_are_invalid_input(shape: list[int]) -> None:
    body = orjson.dumps({"inputs": [{"name": "t", "datatype": "FP32", "shape": shape, "data": []}]})
    with pytest.raises(InvalidInput, match="shape"):
        v2.decode_request(body, None)


def test_bytes_tensors_are_bounded_from_the_shape_before_decoding() -> None:
    def body(shape: list[int], data: list[str]) -> bytes:
        tensor = {"name": "t", "datatype": "BYTES", "shape": shape, "data": data}
        return orjson.dumps({"inputs": [tensor]})

    limits = Limits(max_bytes_elements=4)
    assert v2.decode_request(body([4], ["a"] * 4), None, limits).inputs[0].data.shape == (4,)
    with pytest.raises(InvalidInput, match="5 BYTES elements; the limit is 4"):
        v2.decode_request(body([5], ["a"] * 5), None, limits)
    with pytest.raises(InvalidInput, match="more than 2 elements"):
        v2.decode_request(body([2], ["a"] * 1000), None, limits)
    raw = encode_bytes_elements([b"ab"] * 1000)
    with pytest.raises(InvalidInput, match="more than 2 elements"):
        v2.raw_tensor("t", "BYTES", [2], memoryview(raw))
    with pytest.raises(InvalidInput, match="cannot hold 1000 BYTES elements"):
        v2.raw_tensor("t", "BYTES", [1000], memoryview(raw[:100]))


def test_json_strings_are_counted_in_the_header_before_it_is_parsed() -> None:
    tensors = [{"name": n, "datatype": "BYTES", "shape": [1], "data": ["a"]} for n in "ab"]
    body = orjson.dumps({"inputs": tensors})  # 1 key, then 4 keys and 3 values per tensor
    assert len(v2.decode_request(body, None, Limits(max_json_strings=15)).inputs) == 2
    with pytest.raises(InvalidInput, match="holds 15 JSON strings; the limit is 14"):
        v2.decode_request(body, None, Limits(max_json_strings=14))
    raw = {"name": "t", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 14}}
    header = orjson.dumps({"inputs": [raw]})
    blob = encode_bytes_elements([b'""""""""""'])
    decoded = v2.decode_request(header + blob, str(len(header)), Limits(max_json_strings=8))
    assert decoded.inputs[0].data.tolist() == [b'""""""""""']
