"""The wire walk that runs before protobuf parses a large ModelInferRequest: honest messages
parse exactly as protobuf alone parses them; floods of tiny fields are refused unparsed."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from service.grpc.request_scan import SCAN_ABOVE_BYTES, RefusedRequest, RequestScanner
from service.input_limits import Limits

LIMITS = Limits(max_bytes_elements=1_000)
SCANNER = RequestScanner(LIMITS, max_fields=256)


def text_request(shape: list[int], elements: list[bytes]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="txt", model_version="2", id="req-7")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=shape)
    tensor.contents.bytes_contents.extend(elements)
    return request


def honest_requests() -> list[pb.ModelInferRequest]:
    raw = pb.ModelInferRequest(model_name="tab", id="raw")
    raw.inputs.add(name="features", datatype="FP32", shape=[1024, 256])
    raw.raw_input_contents.append(np.ones((1024, 256), np.float32).tobytes())
    raw.outputs.add(name="probabilities").parameters["binary_data"].bool_param = True
    raw.parameters["priority"].int64_param = 3
    typed = pb.ModelInferRequest(model_name="tab")
    tensor = typed.inputs.add(name="features", datatype="FP32", shape=[50_000, 4])
    tensor.contents.fp32_contents.extend(np.arange(200_000, dtype=np.float32).tolist())
    tensor.parameters["shared_memory_offset"].int64_param = 0
    strings = text_request([1_000], [b"x" * 100] * 1_000)
    two = text_request([2], [b"a" * 50_000, b"b" * 50_000])
    return [raw, typed, strings, two]


@pytest.mark.parametrize("request_", honest_requests(), ids=["raw", "typed", "1k", "2"])
def test_a_message_within_the_limits_parses_as_protobuf_parses_it(
    request_: pb.ModelInferRequest,
) -> None:
    raw = request_.SerializeToString()
    assert len(raw) > SCAN_ABOVE_BYTES  # the walk runs
    assert SCANNER.parse(raw) == pb.ModelInferRequest.FromString(raw)


def test_a_negative_dimension_is_refused_by_the_shared_shape_check() -> None:
    raw = text_request([-1, 2], [b"a" * 40_000, b"b" * 40_000]).SerializeToString()
    parsed = SCANNER.parse(raw)
    assert isinstance(parsed, RefusedRequest)
    assert parsed.error.message == "input 'text': shape must be a list of non-negative integers"


def test_more_bytes_elements_than_the_limit_are_refused_from_the_shape() -> None:
    parsed = SCANNER.parse(text_request([50_000], [b"ab"] * 50_000).SerializeToString())
    assert isinstance(parsed, RefusedRequest)
    # The very message REST gives for the same shape (one check for both).
    assert parsed.error.message == (
        "input 'text': shape [50000] holds 50000 BYTES elements; the limit is 1000"
    )
    assert (parsed.model_name, parsed.model_version, parsed.id) == ("txt", "2", "req-7")


def test_more_bytes_elements_than_the_shape_declares_are_refused_at_the_first_extra() -> None:
    parsed = SCANNER.parse(text_request([2], [b"ab"] * 50_000).SerializeToString())
    assert isinstance(parsed, RefusedRequest)
    assert "more than 2 bytes_contents elements for shape [2]" in parsed.error.message


@pytest.mark.parametrize("where", ["raw_input_contents", "parameters", "outputs", "unpacked"])
def test_a_flood_of_tiny_fields_is_refused_past_the_field_budget(where: str) -> None:
    request = pb.ModelInferRequest(model_name="tab")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    for index in range(40_000):
        if where == "raw_input_contents":
            request.raw_input_contents.append(b"")
        elif where == "parameters":
            tensor.parameters[f"p{index}"].bool_param = True
        elif where == "outputs":
            request.outputs.add(name="o")
    raw = request.SerializeToString()
    if where == "unpacked":  # 40,000 fp32 values, each its own field (legal, if unusual)
        contents = b"".join(b"\x35" + np.float32(1).tobytes() for _ in range(40_000))
        raw += b"\x2a" + _varint(len(_input(contents))) + _input(contents)
    parsed = SCANNER.parse(raw)
    assert isinstance(parsed, RefusedRequest)
    assert "more than 256 protobuf fields" in parsed.error.message


def test_a_malformed_large_message_is_left_to_protobuf() -> None:
    raw = text_request([2], [b"a" * 70_000, b"b"]).SerializeToString()
    with pytest.raises(DecodeError):
        SCANNER.parse(raw[:-1])  # the last element's length runs past the end


def test_a_small_message_is_not_walked() -> None:
    raw = text_request([2], [b"ab"] * 5_000).SerializeToString()
    assert len(raw) <= SCAN_ABOVE_BYTES
    parsed = SCANNER.parse(raw)
    assert isinstance(parsed, pb.ModelInferRequest)  # the servicer's own check refuses it


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _input(contents: bytes) -> bytes:
    """An InferInputTensor named x, FP32, shape [40000], with these contents bytes."""
    shape = _varint(40_000)
    return (
        b"\x0a\x01x"
        + b"\x12\x04FP32"
        + b"\x1a"
        + _varint(len(shape))
        + shape
        + b"\x2a"
        + _varint(len(contents))
        + contents
    )
