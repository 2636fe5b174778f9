"""Hostile tensors against a real gateway process (HTTP and gRPC): shapes numpy cannot hold and
BYTES tensors of millions of elements are refused from their declared shape, before anything is
decoded, while the health probe keeps answering and memory stays bounded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.reliability.probes import HealthProbe, PeakRss, rss_bytes
from tests.servers import GatewayProcess, gateway
from tests.tiny_models import full_store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MB = 1024 * 1024
ELEMENTS = 10_000_000
"""Two-byte BYTES elements in one gRPC request: 60 MB raw (was +1.25 GB RSS, loop blocked
5.7 s); as typed `bytes_contents`, 40 MB."""
ROWS = 2_000_000
"""One-character strings in one JSON request: a 7.6 MB body (was +270 MB at its peak)."""
JSON_GROWTH_MB = 60
"""Peak RSS growth allowed for a refused JSON body: the body, read and buffered (+15-16 MB
measured)."""
GROWTH_MB = 400
"""Peak RSS growth allowed per refused gRPC request: the request itself (a 60 MB message is
held by gRPC and again by protobuf) plus decoding at most the element limit. Before the
limit: +1,250 MB (gRPC raw)."""
# A zero dimension beside a huge one (numpy: "array is too big"), and 65 dimensions (numpy's
# limit is 64); both used to escape as numpy's ValueError, answered 500 / INTERNAL.
BAD_SHAPES = [[0, 4611686018427387904], [1] * 65, [0] * 65]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A fresh gateway per attack: memory measured on one that earlier attacks grew would
    hide growth in the free memory they left."""
    store = full_store(tmp_path / "store")
    with gateway(store, tmp_path) as process:
        yield process


@pytest.fixture
def stub(server: GatewayProcess) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    options = [("grpc.max_send_message_length", 128 * MB)]
    with grpc.insecure_channel(server.grpc_address, options=options) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.mark.parametrize("shape", BAD_SHAPES, ids=["zero-by-2^62", "65-ones", "65-zeros"])
def test_shapes_numpy_cannot_hold_are_400_and_invalid_argument(
    server: GatewayProcess, stub: pb_grpc.GRPCInferenceServiceStub, shape: list[int]
) -> None:
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": shape, "data": []}]}
    response = httpx.post(f"{server.url}/v2/models/tab/infer", json=body, timeout=10)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"}
    assert "shape" in response.json()["error"]
    request = pb.ModelInferRequest(model_name="tab")
    request.inputs.add(name="features", datatype="FP32", shape=shape)
    request.raw_input_contents.append(b"")
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shape" in (refused.value.details() or "")
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200


def text_request(shape: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="txt")
    request.inputs.add(name="text", datatype="BYTES", shape=shape)
    return request


def raw_bytes_request() -> pb.ModelInferRequest:
    request = text_request([ELEMENTS])
    request.raw_input_contents.append(b"\x02\x00\x00\x00ab" * ELEMENTS)
    return request


def typed_bytes_request() -> pb.ModelInferRequest:
    request = text_request([ELEMENTS])
    request.inputs[0].contents.bytes_contents.extend([b"ab"] * ELEMENTS)
    return request


def lying_bytes_request() -> pb.ModelInferRequest:
    """A shape of 2 elements, and 10M of them on the wire."""
    request = text_request([2])
    request.raw_input_contents.append(b"\x02\x00\x00\x00ab" * ELEMENTS)
    return request


def refuse(
    server: GatewayProcess, stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest
) -> tuple[grpc.RpcError, HealthProbe, PeakRss]:
    pid = server.process.pid
    start = rss_bytes(pid)
    with (
        HealthProbe(server.url) as probe,
        PeakRss(pid) as rss,
        pytest.raises(grpc.RpcError) as refused,
    ):
        stub.ModelInfer(request, timeout=60)
    after = rss_bytes(pid)
    print(
        f"{refused.value.code()} {refused.value.details()!r}; RSS {start / MB:.0f} MB, "
        f"peak +{rss.growth_mb:.0f} MB, just after {after / MB:.0f} MB; slowest health "
        f"probe {probe.worst_s * 1000:.0f} ms of {len(probe.latencies)}"
    )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return refused.value, probe, rss


@pytest.mark.parametrize(
    "build",
    [raw_bytes_request, lying_bytes_request, typed_bytes_request],
    ids=["raw", "lying", "typed"],
)
def test_grpc_bytes_tensors_are_refused_before_decoding(
    server: GatewayProcess,
    stub: pb_grpc.GRPCInferenceServiceStub,
    build: Callable[[], pb.ModelInferRequest],
) -> None:
    """Typed `bytes_contents` are refused from the shape by the wire walk, before protobuf
    parses the message (`service.grpc.request_scan`). Before the walk: +540 MB and stalls up
    to 2.4 s for protobuf's parse of 10M repeated fields; before the shape check, +1,764 MB
    and 3.6 s."""
    refused, probe, rss = refuse(server, stub, build())
    assert "elements" in (refused.details() or "")
    assert probe.worst_s < 1.0
    assert rss.growth_mb < GROWTH_MB


def test_a_refused_message_on_a_stream_answers_only_itself(
    server: GatewayProcess, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    """A stream's message refused from its wire bytes gets its own error answer (with its
    id); the stream goes on and answers the next request."""
    flood = typed_bytes_request()
    flood.id = "flood"
    honest = text_request([1])
    honest.id = "honest"
    honest.inputs[0].contents.bytes_contents.append(b"a fine day")
    answers = list(stub.ModelStreamInfer(iter([flood, honest]), timeout=60))
    by_id = {answer.infer_response.id: answer for answer in answers}
    assert "the limit is" in by_id["flood"].error_message
    assert by_id["honest"].error_message == ""
    assert by_id["honest"].infer_response.outputs


def v2_body(shape: list[int]) -> bytes:
    tensor = {"name": "text", "datatype": "BYTES", "shape": shape, "data": ["a"] * ROWS}
    return orjson.dumps({"inputs": [tensor]})


JSON_ATTACKS = {
    "v2-declared": ("/v2/models/txt/infer", v2_body([ROWS])),
    "v2-shape-lies": ("/v2/models/txt/infer", v2_body([2])),
    "kserve-v1": ("/v1/models/txt:predict", orjson.dumps({"instances": ["a"] * ROWS})),
    "predictions": ("/predictions/txt", orjson.dumps(["a"] * ROWS)),
}


@pytest.mark.parametrize("attack", JSON_ATTACKS)
def test_json_bodies_of_millions_of_strings_are_refused_before_parsing(
    server: GatewayProcess, attack: str
) -> None:
    """Every JSON route counts a body's strings before parsing it (`max_json_strings`).
    Before the count: +184 MB at the peak (V2, refused from the shape after parsing)."""
    path, body = JSON_ATTACKS[attack]
    pid = server.process.pid
    start = rss_bytes(pid)
    with HealthProbe(server.url) as probe, PeakRss(pid) as rss:
        response = httpx.post(
            f"{server.url}{path}",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
    print(
        f"JSON {len(body) / MB:.1f} MB to {path}: {response.status_code} {response.text!r}; "
        f"RSS {start / MB:.0f} MB, peak +{rss.growth_mb:.0f} MB; "
        f"slowest health probe {probe.worst_s * 1000:.0f} ms"
    )
    assert response.status_code == 400
    assert "JSON strings; the limit is 65536" in response.json()["error"]
    assert probe.worst_s < 1.0
    assert rss.growth_mb < JSON_GROWTH_MB
