"""System shared memory served by a real gateway process, driven by stock tritonclient (http and
grpc) with its own `tritonclient.utils.shared_memory` helpers, as Triton's shm examples do:
answers through shared memory equal the plain call's; bad slices are 400 / INVALID_ARGUMENT and
leave the server serving; the verbs need the inference token; CUDA shared memory says it is
not supported."""

from __future__ import annotations

import base64
import os
import queue
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from onnx import TensorProto
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from service.shared_memory import SHM_DIR
from tests.servers import GatewayProcess, gateway
from tests.service.triton.models import identity_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not SHM_DIR.is_dir(), reason="needs /dev/shm (Linux)"),
]

TOKEN = "shm-token"


def auth() -> dict[str, str]:
    """A fresh headers dict per call (tritonclient.http's infer adds its own headers to the
    one it is given), its key in lower case as gRPC metadata requires."""
    return {"authorization": f"Bearer {TOKEN}"}


PROTOCOLS = ["http", "grpc"]
HANDLE = base64.b64encode(b"a cudaIpcMemHandle_t").decode()
"""What tritonclient takes for a CUDA region (its serialized IPC handle, base64)."""
X = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
TEXT = np.array([[b"a\x00b", b""], ["é".encode(), b"\x01\x02\x03"]], dtype=object)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    store = tmp_path_factory.mktemp("shm") / "repository"
    identity_model(store / "floats" / "1" / "model.onnx", {"x": (TensorProto.FLOAT, ["N", 4])})
    identity_model(store / "texts" / "1" / "model.onnx", {"s": (TensorProto.STRING, ["N", 2])})
    env = {"GATEWAY_SHARED_MEMORY": "true", "GATEWAY_INFERENCE_TOKEN": TOKEN}
    with gateway(store, tmp_path_factory.mktemp("logs"), env=env, timeout_s=120) as process:
        yield process


def connect(server: GatewayProcess, protocol: str) -> tuple[ModuleType, Any]:
    if protocol == "http":
        return httpclient, httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    return grpcclient, grpcclient.InferenceServerClient(server.grpc_address)


class Regions:
    """Regions created with tritonclient's helpers under fresh keys; destroyed afterwards."""

    def __init__(self) -> None:
        self.handles: list[Any] = []

    def create(self, name: str, byte_size: int) -> tuple[Any, str]:
        key = f"/gateway-shm-test-{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(name, key, byte_size, create_only=True)
        self.handles.append(handle)
        return handle, key

    def destroy(self) -> None:
        for handle in self.handles:
            shm.destroy_shared_memory_region(handle)


@pytest.fixture
def regions(server: GatewayProcess) -> Iterator[Regions]:
    made = Regions()
    yield made
    httpclient.InferenceServerClient(f"127.0.0.1:{server.port}").unregister_system_shared_memory(
        headers=auth()
    )
    made.destroy()


def plain(module: ModuleType, client: Any, model: str, name: str, data: np.ndarray) -> Any:
    item = module.InferInput(name, list(data.shape), "BYTES" if data.dtype == object else "FP32")
    item.set_data_from_numpy(data)
    return client.infer(model, [item], headers=auth()).as_numpy(f"{name}_out")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_fp32_through_shared_memory_equals_the_plain_call(
    server: GatewayProcess, regions: Regions, protocol: str
) -> None:
    module, client = connect(server, protocol)
    client.unregister_cuda_shared_memory(headers=auth())  # what clients do first
    client.unregister_system_shared_memory(headers=auth())
    size = X.nbytes
    in_handle, in_key = regions.create("in", 64 + size)
    out_handle, out_key = regions.create("out", 2 * size)
    shm.set_shared_memory_region(in_handle, [X], offset=64)
    client.register_system_shared_memory("in", in_key, 64 + size, headers=auth())
    client.register_system_shared_memory("out", out_key, size, offset=size, headers=auth())

    item = module.InferInput("x", [3, 4], "FP32")
    item.set_shared_memory("in", size, offset=64)
    wanted = module.InferRequestedOutput("x_out")
    wanted.set_shared_memory("out", size)
    result = client.infer("floats", [item], outputs=[wanted], headers=auth())
    output = result.get_output("x_out")
    shape = list(output["shape"] if protocol == "http" else output.shape)
    assert shape == [3, 4]
    # the region starts `size` bytes into its object
    through = shm.get_contents_as_numpy(out_handle, np.float32, shape, offset=size)
    np.testing.assert_array_equal(through, plain(module, client, "floats", "x", X))
    np.testing.assert_array_equal(through, X)
    client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bytes_through_shared_memory_equal_the_plain_call(
    server: GatewayProcess, regions: Regions, protocol: str
) -> None:
    module, client = connect(server, protocol)
    serialized = serialize_byte_tensor(TEXT)
    size = len(serialized.item())
    in_handle, in_key = regions.create("text_in", size)
    out_handle, out_key = regions.create("text_out", 256)
    shm.set_shared_memory_region(in_handle, [serialized])
    client.register_system_shared_memory("text_in", in_key, size, headers=auth())
    client.register_system_shared_memory("text_out", out_key, 256, headers=auth())

    item = module.InferInput("s", [2, 2], "BYTES")
    item.set_shared_memory("text_in", size)
    wanted = module.InferRequestedOutput("s_out")
    wanted.set_shared_memory("text_out", 256)
    client.infer("texts", [item], outputs=[wanted], headers=auth())
    through = shm.get_contents_as_numpy(out_handle, np.object_, [2, 2])
    assert through.tolist() == plain(module, client, "texts", "s", TEXT).tolist()
    assert through.tolist() == TEXT.tolist()
    client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_slices_are_invalid_and_the_server_keeps_serving(
    server: GatewayProcess, regions: Regions, protocol: str
) -> None:
    module, client = connect(server, protocol)
    size = X.nbytes
    handle, key = regions.create("small", size)
    shm.set_shared_memory_region(handle, [X])
    client.register_system_shared_memory("small", key, size, headers=auth())
    invalid = "400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT"

    for region, byte_size, offset, message in (
        ("small", 4, size, "Invalid offset for shared memory region: 'small'"),
        ("small", size + 4, 0, "Invalid offset \\+ byte size"),
        ("elsewhere", size, 0, "Unable to find shared memory region: 'elsewhere'"),
    ):
        item = module.InferInput("x", [3, 4], "FP32")
        item.set_shared_memory(region, byte_size, offset=offset)
        with pytest.raises(InferenceServerException, match=message) as caught:
            client.infer("floats", [item], headers=auth())
        assert caught.value.status() == invalid
    # an output region too small for the answer
    item = module.InferInput("x", [3, 4], "FP32")
    item.set_shared_memory("small", size)
    wanted = module.InferRequestedOutput("x_out")
    wanted.set_shared_memory("small", size // 2)
    with pytest.raises(InferenceServerException, match="the output needs 48 bytes") as caught:
        client.infer("floats", [item], outputs=[wanted], headers=auth())
    assert caught.value.status() == invalid

    assert client.is_server_live()
    assert client.is_server_ready()
    item = module.InferInput("x", [3, 4], "FP32")
    item.set_shared_memory("small", size)
    answer = client.infer("floats", [item], headers=auth()).as_numpy("x_out")
    np.testing.assert_array_equal(answer, X)
    client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_register_status_and_unregister_need_the_token(
    server: GatewayProcess, regions: Regions, protocol: str
) -> None:
    _, client = connect(server, protocol)
    _, key = regions.create("guarded", 4096)
    unauthenticated = "401" if protocol == "http" else "StatusCode.UNAUTHENTICATED"
    for call in (
        lambda: client.register_system_shared_memory("guarded", key, 4096),
        lambda: client.get_system_shared_memory_status(),
        lambda: client.unregister_system_shared_memory(),
        lambda: client.unregister_system_shared_memory("guarded"),
    ):
        with pytest.raises(InferenceServerException) as caught:
            call()
        assert caught.value.status() == unauthenticated

    client.register_system_shared_memory("guarded", key, 4000, offset=96, headers=auth())
    with pytest.raises(InferenceServerException, match="already in manager"):
        client.register_system_shared_memory("guarded", key, 4000, headers=auth())
    if protocol == "http":
        status = client.get_system_shared_memory_status("guarded", headers=auth())
        assert status == [{"name": "guarded", "key": key, "offset": 96, "byte_size": 4000}]
    else:
        status = client.get_system_shared_memory_status("guarded", headers=auth(), as_json=True)
        assert status["regions"]["guarded"] == {
            "name": "guarded",
            "key": key,
            "offset": "96",
            "byte_size": "4000",
        }
    client.unregister_system_shared_memory("guarded", headers=auth())
    with pytest.raises(InferenceServerException, match="Unable to find system shared memory"):
        client.get_system_shared_memory_status("guarded", headers=auth())
    for bad in ("../etc/passwd", "/a/b", f"/{os.path.basename(key)}/.."):
        with pytest.raises(InferenceServerException, match="invalid shared memory key"):
            client.register_system_shared_memory("escape", bad, 16, headers=auth())
    client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cuda_shared_memory_is_not_supported_but_unregistering_all_succeeds(
    server: GatewayProcess, protocol: str
) -> None:
    _, client = connect(server, protocol)
    client.unregister_cuda_shared_memory(headers=auth())
    unsupported = "400" if protocol == "http" else "StatusCode.UNIMPLEMENTED"
    for call in (
        lambda: client.register_cuda_shared_memory("gpu", HANDLE, 0, 16, headers=auth()),
        lambda: client.get_cuda_shared_memory_status(headers=auth()),
    ):
        with pytest.raises(
            InferenceServerException, match="CUDA shared memory is not supported"
        ) as caught:
            call()
        assert caught.value.status() == unsupported
    client.close()


def test_server_metadata_lists_system_shared_memory(server: GatewayProcess) -> None:
    _, client = connect(server, "http")
    extensions = client.get_server_metadata(headers=auth())["extensions"]
    assert "system_shared_memory" in extensions
    assert "cuda_shared_memory" not in extensions
    client.close()


def test_regions_are_unmapped_on_unregister(server: GatewayProcess, regions: Regions) -> None:
    """The server's own mapping of an object is gone once it is unregistered (Linux's
    /proc/<pid>/maps lists the mappings a process holds)."""
    _, client = connect(server, "http")
    _, key = regions.create("mapped", 4096)
    maps = Path(f"/proc/{server.process.pid}/maps")
    client.register_system_shared_memory("mapped", key, 4096, headers=auth())
    assert key in maps.read_text()
    client.unregister_system_shared_memory(headers=auth())
    assert key not in maps.read_text()
    client.close()


def test_grpc_stream_requests_use_shared_memory_too(
    server: GatewayProcess, regions: Regions
) -> None:
    _, client = connect(server, "grpc")
    size = X.nbytes
    in_handle, in_key = regions.create("stream_in", size)
    out_handle, out_key = regions.create("stream_out", 4 * size)
    shm.set_shared_memory_region(in_handle, [X])
    client.register_system_shared_memory("stream_in", in_key, size, headers=auth())
    client.register_system_shared_memory("stream_out", out_key, 4 * size, headers=auth())
    answers: queue.Queue[Any] = queue.Queue()
    client.start_stream(lambda result, error: answers.put(error or result), headers=auth())
    for index in range(4):  # each answer in its own quarter of the output region
        item = grpcclient.InferInput("x", [3, 4], "FP32")
        item.set_shared_memory("stream_in", size)
        wanted = grpcclient.InferRequestedOutput("x_out")
        wanted.set_shared_memory("stream_out", size, offset=index * size)
        client.async_stream_infer("floats", [item], outputs=[wanted], request_id=str(index))
    got = [answers.get(timeout=60) for _ in range(4)]
    client.stop_stream()
    assert all(not isinstance(answer, Exception) for answer in got), got
    for index in range(4):
        part = shm.get_contents_as_numpy(out_handle, np.float32, [3, 4], offset=index * size)
        np.testing.assert_array_equal(part, X)
    client.close()
