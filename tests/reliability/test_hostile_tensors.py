"""Hostile tensors against a real gateway process (HTTP and gRPC): shapes numpy cannot hold and
BYTES tensors of millions of elements are refused from their declared shape, before anything is
decoded, while the health probe keeps answering and memory stays bounded."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.servers import GatewayProcess, gateway
from tests.tiny_models import full_store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MB = 1024 * 1024
# A zero dimension beside a huge one (numpy: "array is too big"), and 65 dimensions (numpy's
# limit is 64); both used to escape as numpy's ValueError, answered 500 / INTERNAL.
BAD_SHAPES = [[0, 4611686018427387904], [1] * 65, [0] * 65]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("hostile-tensors")
    store = full_store(root / "store")
    with gateway(store, root, env={"GATEWAY_GRPC_MAX_MESSAGE_BYTES": str(128 * MB)}) as process:
        yield process


@pytest.fixture(scope="module")
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
