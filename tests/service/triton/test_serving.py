"""A Triton-layout repository served by a real gateway process, driven by stock tritonclient
programs (http and grpc, sync and aio) that read the metadata and configuration first, as
Triton's own examples do. Answers are compared with ONNX Runtime / torch in-process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpclient_aio
from onnx import TensorProto
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from tests.servers import GatewayProcess, gateway, sample_total
from tests.service.triton.models import (
    EVERY_TYPE,
    every_type_model,
    identity_model,
    model_folder,
    pt2_model,
    scaled_model,
    torchscript_model,
    two_heads_model,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

LABELS = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton") / "repository"
    # ONNX, several inputs and outputs, labels, no config.pbtxt beyond the labels
    heads = model_folder(
        root,
        "heads",
        'output [{ name: "scores", data_type: TYPE_FP32, dims: [3], '
        'label_filename: "labels.txt" }]\n',
    )
    (heads / "labels.txt").write_text("\n".join(LABELS) + "\n")
    two_heads_model(heads / "1" / "model.onnx")
    # INT8/INT32/INT64/FP16/BOOL/BYTES, batching
    every_type_model(root / "types" / "1" / "model.onnx")
    # max_batch_size 0 with a reshape: the client sends [2, 2], the model takes [4]
    flat = model_folder(
        root,
        "flat",
        "max_batch_size: 0\n"
        'input [{ name: "x", data_type: TYPE_FP32, dims: [2, 2], reshape: { shape: [4] } }]\n'
        'output [{ name: "x_out", data_type: TYPE_FP32, dims: [4] }]\n',
    )
    identity_model(flat / "1" / "model.onnx", {"x": (TensorProto.FLOAT, [4])})
    # two versions under each version policy
    for name, policy in (
        ("latest", ""),
        ("every", "version_policy: { all: {} }\n"),
        ("chosen", "version_policy: { specific: { versions: [1] } }\n"),
    ):
        folder = model_folder(root, name, policy)
        for version in ("1", "2"):
            scaled_model(folder / version / "model.onnx", float(version))
    # an instance group of 2 and a dynamic batcher that waits, beside one that runs alone
    for name, batching in (
        ("waits", "dynamic_batching { max_queue_delay_microseconds: 300000 }\n"),
        ("alone", ""),
    ):
        folder = model_folder(
            root,
            name,
            "max_batch_size: 16\n"
            'input [{ name: "v", data_type: TYPE_FP32, dims: [2] }]\n'
            'output [{ name: "v_out", data_type: TYPE_FP32, dims: [2] }]\n'
            "instance_group [{ count: 2, kind: KIND_CPU }]\n" + batching,
        )
        identity_model(folder / "1" / "model.onnx", {"v": (TensorProto.FLOAT, ["N", 2])})
    # TorchScript with config.pbtxt, a .pt2 and an ONNX file without one
    scripted = model_folder(
        root,
        "scripted",
        'platform: "pytorch_libtorch"\nmax_batch_size: 8\n'
        'input [{ name: "x", data_type: TYPE_FP32, dims: [3] }]\n'
        'output [{ name: "y", data_type: TYPE_FP32, dims: [3] }]\n',
    )
    torchscript_model(scripted / "1" / "model.pt")
    pt2_model(root / "exported" / "1" / "model.pt2")
    two_heads_model(root / "bare.onnx")
    # a folder nobody can serve
    (root / "broken").mkdir()
    (root / "broken" / "README").write_text("not a model")
    return root


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"GATEWAY_MANAGEMENT_TOKEN": "manage"}
    with gateway(store, tmp_path_factory.mktemp("logs"), env=env, timeout_s=180) as process:
        yield process


def http(server: GatewayProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")


def reference(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def build_inputs(metadata: dict[str, Any], config: dict[str, Any], module: Any) -> list[Any]:
    """What Triton's example clients do: the inputs from the metadata, with the batch
    dimension from `max_batch_size`, filled with data of the right type."""
    batching = config["max_batch_size"] > 0
    generator = np.random.default_rng(0)
    inputs = []
    for tensor in metadata["inputs"]:
        dims = [d for d in tensor["shape"][1 if batching else 0 :]]
        shape = ([3] if batching else []) + [2 if d == -1 else d for d in dims]
        datatype = tensor["datatype"]
        if datatype == "BYTES":
            data = np.array([b"a\x00b", b"\x00\x01\x02\x03"] * 3, dtype=object).reshape(shape)
        elif datatype == "BOOL":
            data = generator.random(shape) > 0.5
        elif datatype == "FP16":
            data = generator.random(shape).astype(np.float16)
        elif datatype.startswith("INT"):
            data = generator.integers(-100, 100, shape).astype(np.dtype(datatype.lower()))
        else:
            data = generator.random(shape).astype(np.float32)
        item = module.InferInput(tensor["name"], list(data.shape), datatype)
        item.set_data_from_numpy(data)
        inputs.append((item, data))
    return inputs


@pytest.mark.parametrize("binary", [True, False])
def test_http_clients_read_metadata_and_config_then_infer(
    server: GatewayProcess, store: Path, binary: bool
) -> None:
    client = http(server)
    for name, file in (("heads", "heads/1/model.onnx"), ("types", "types/1/model.onnx")):
        metadata = client.get_model_metadata(name)
        config = client.get_model_config(name)
        assert config["name"] == name
        assert config["max_batch_size"] == 4
        pairs = build_inputs(metadata, config, httpclient)
        if not binary and name == "types":
            pairs = [(item, data) for item, data in pairs if item.name() != "text"]
            pairs.append(_text_json(pairs))
        outputs = [
            httpclient.InferRequestedOutput(o["name"], binary_data=binary)
            for o in metadata["outputs"]
        ]
        result = client.infer(name, [item for item, _ in pairs], outputs=outputs)
        expected = reference(store / file, {item.name(): _ort(data) for item, data in pairs})
        for output in metadata["outputs"]:
            got = result.as_numpy(output["name"])
            want = expected[output["name"]]
            if want.dtype == object:
                assert [_bytes(g) for g in got.reshape(-1)] == [_bytes(w) for w in want.reshape(-1)]
            else:
                np.testing.assert_allclose(got, want, atol=1e-5)
    client.close()


def _text_json(pairs: list[Any]) -> Any:
    data = np.array([b"a\x00b", b"\x00\x01\x02\x03"] * 3, dtype=object).reshape(3, 2)
    item = httpclient.InferInput("text", [3, 2], "BYTES")
    item.set_data_from_numpy(data, binary_data=False)
    return item, data


def _bytes(item: Any) -> bytes:
    return item.encode() if isinstance(item, str) else bytes(item)


def _ort(data: np.ndarray) -> np.ndarray:
    if data.dtype == object:
        return np.array([d.decode() for d in data.reshape(-1)], dtype=object).reshape(data.shape)
    return data


def test_grpc_sync_and_streaming_bytes_are_byte_exact(server: GatewayProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_address)
    config = client.get_model_config("types", as_json=True)["config"]
    assert int(config["max_batch_size"]) == 4
    inputs = []
    arrays = {}
    for name, kind in EVERY_TYPE.items():
        if kind == TensorProto.STRING:
            data = np.array([[b"\x00", b"x\x00y"], [b"\x01\x02\x03\x04", b""]], dtype=object)
        elif kind == TensorProto.BOOL:
            data = np.array([[True, False], [False, True]])
        elif kind == TensorProto.FLOAT16:
            data = np.array([[0.5, 1.5], [2.5, -1]], dtype=np.float16)
        else:
            width = {TensorProto.INT8: np.int8, TensorProto.INT32: np.int32}.get(kind, np.int64)
            data = np.array([[1, -2], [3, -4]], dtype=width)
        arrays[name] = data
        item = grpcclient.InferInput(name, list(data.shape), np_to_triton_dtype(data.dtype))
        item.set_data_from_numpy(data)
        inputs.append(item)
    result = client.infer("types", inputs)
    for name, data in arrays.items():
        got = result.as_numpy(f"{name}_out")
        if data.dtype == object:
            assert got.tolist() == data.tolist()
        else:
            np.testing.assert_array_equal(got, data)
    # the same on a stream
    answers: list[Any] = []
    done = concurrent.futures.Future[None]()

    def callback(result: Any, error: Any) -> None:
        answers.append(error or result)
        if len(answers) == 4:
            done.set_result(None)

    client.start_stream(callback)
    for _ in range(4):
        client.async_stream_infer("types", inputs)
    done.result(timeout=60)
    client.stop_stream()
    for answer in answers:
        assert answer.as_numpy("text_out").tolist() == arrays["text"].tolist()
    client.close()


def test_aio_clients_on_bare_file_pt2_and_torchscript(server: GatewayProcess) -> None:
    import torch

    async def run() -> None:
        http_aio = httpclient_aio.InferenceServerClient(f"127.0.0.1:{server.port}")
        grpc_aio = grpcclient_aio.InferenceServerClient(server.grpc_address)
        try:
            x = np.arange(12, dtype=np.float32).reshape(3, 4)
            item = httpclient_aio.InferInput("features", [3, 4], "FP32")
            item.set_data_from_numpy(x)
            bare = await http_aio.infer("bare", [item])
            assert bare.as_numpy("scores").shape == (3, 3)
            metadata = await grpc_aio.get_model_metadata("exported", as_json=True)
            assert [o["name"] for o in metadata["outputs"]] == ["OUTPUT__0", "OUTPUT__1"]
            ids = np.arange(15, dtype=np.int64).reshape(3, 5)
            items = [grpcclient_aio.InferInput("x", [3, 4], "FP32")]
            items[0].set_data_from_numpy(x)
            items.append(grpcclient_aio.InferInput("ids", [3, 5], "INT64"))
            items[1].set_data_from_numpy(ids)
            exported = await grpc_aio.infer("exported", items)
            np.testing.assert_allclose(exported.as_numpy("OUTPUT__0"), x.sum(-1, keepdims=True))
            np.testing.assert_array_equal(exported.as_numpy("OUTPUT__1"), ids.astype(np.float16))
            scripted_in = grpcclient_aio.InferInput("x", [2, 3], "FP32")
            scripted_in.set_data_from_numpy(x[:2, :3].copy())
            scripted = await grpc_aio.infer("scripted", [scripted_in])
            expected = torch.from_numpy(x[:2, :3].copy()) * 2
            np.testing.assert_allclose(scripted.as_numpy("y"), expected.numpy(), atol=1e-6)
        finally:
            await http_aio.close()
            await grpc_aio.close()

    asyncio.run(run())


def test_no_batch_dimension_and_reshape(server: GatewayProcess) -> None:
    client = http(server)
    config = client.get_model_config("flat")
    assert config["max_batch_size"] == 0
    assert client.get_model_metadata("flat")["inputs"][0]["shape"] == [2, 2]
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    item = httpclient.InferInput("x", [2, 2], "FP32")
    item.set_data_from_numpy(x)
    result = client.infer("flat", [item])
    np.testing.assert_array_equal(result.as_numpy("x_out"), x.reshape(4))
    client.close()


def test_version_policies(server: GatewayProcess) -> None:
    client = http(server)
    assert client.get_model_metadata("latest")["versions"] == ["2"]
    assert client.get_model_metadata("every")["versions"] == ["1", "2"]
    assert client.get_model_metadata("chosen")["versions"] == ["1"]
    x = np.ones((1, 2), np.float32)
    for version in ("1", "2"):
        item = httpclient.InferInput("v", [1, 2], "FP32")
        item.set_data_from_numpy(x)
        answer = client.infer("every", [item], model_version=version)
        np.testing.assert_array_equal(answer.as_numpy("y"), x * float(version))
    with pytest.raises(InferenceServerException, match="unknown model: 'chosen' version 2"):
        client.get_model_metadata("chosen", "2")
    client.close()


def test_dynamic_batching_settings_change_the_batches(server: GatewayProcess) -> None:
    client = http(server)
    metadata_before = client.get_inference_statistics("waits")
    assert metadata_before["model_stats"][0]["inference_count"] == 0

    def send(model: str) -> None:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.port}") as own:
            item = httpclient.InferInput("v", [1, 2], "FP32")
            item.set_data_from_numpy(np.ones((1, 2), np.float32))
            own.infer(model, [item])

    for model in ("waits", "alone"):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(send, [model] * 8))
    stats = {
        model: client.get_inference_statistics(model)["model_stats"][0]
        for model in ("waits", "alone")
    }
    for model, found in stats.items():
        assert found["inference_count"] == 8, model
        assert found["inference_stats"]["success"]["count"] == 8, model
        assert found["inference_stats"]["queue"]["count"] == 8, model
    assert stats["waits"]["execution_count"] < 8  # merged while the batcher waited
    assert stats["alone"]["execution_count"] == 8  # no dynamic batcher: one request each
    assert {b["batch_size"] for b in stats["alone"]["batch_stats"]} == {1}
    exposition = urllib.request.urlopen(f"{server.url}/metrics", timeout=10).read().decode()
    batches = sample_total(exposition, "gateway_batch_size_count", model="waits")
    assert batches == stats["waits"]["execution_count"]
    client.close()


def test_classification_top_k_equals_argsort(server: GatewayProcess, store: Path) -> None:
    x = np.random.default_rng(1).random((4, 4)).astype(np.float32)
    expected = reference(store / "heads" / "1" / "model.onnx", {"features": x})["scores"]
    order = np.argsort(-expected, axis=1)[:, :2]
    client = http(server)
    item = httpclient.InferInput("features", [4, 4], "FP32")
    item.set_data_from_numpy(x)
    result = client.infer(
        "heads", [item], outputs=[httpclient.InferRequestedOutput("scores", class_count=2)]
    )
    classes = result.as_numpy("scores")
    assert classes.shape == (4, 2)
    for row, indices in enumerate(order):
        for column, index in enumerate(indices):
            value, got_index, label = classes[row, column].decode().split(":")
            assert (int(got_index), label) == (int(index), LABELS[index])
            assert float(value) == pytest.approx(expected[row, index], abs=1e-5)
    grpc = grpcclient.InferenceServerClient(server.grpc_address)
    item = grpcclient.InferInput("features", [4, 4], "FP32")
    item.set_data_from_numpy(x)
    answer = grpc.infer(
        "heads", [item], outputs=[grpcclient.InferRequestedOutput("scores", class_count=2)]
    )
    assert answer.as_numpy("scores").tolist() == classes.tolist()
    grpc.close()
    client.close()


def test_statistics_count_the_requests_sent(server: GatewayProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_address)
    before = client.get_inference_statistics("bare", as_json=True)["model_stats"][0]
    sent = 5
    for _ in range(sent):
        item = grpcclient.InferInput("features", [2, 4], "FP32")
        item.set_data_from_numpy(np.ones((2, 4), np.float32))
        client.infer("bare", [item])
    after = client.get_inference_statistics("bare", as_json=True)["model_stats"][0]

    def count(stats: dict[str, Any], part: str) -> int:
        return int(stats["inference_stats"][part].get("count", 0))

    assert count(after, "success") - count(before, "success") == sent
    assert count(after, "compute_infer") - count(before, "compute_infer") == sent
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 2 * sent
    every = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {"bare", "heads", "types"} <= {entry["name"] for entry in every}
    client.close()


def test_triton_error_texts(server: GatewayProcess) -> None:
    client = http(server)
    with pytest.raises(InferenceServerException, match="Request for unknown model: 'nope'"):
        client.get_model_metadata("nope")
    with pytest.raises(InferenceServerException, match="failed to get model version"):
        client.get_model_metadata("heads", "abc")
    item = httpclient.InferInput("features", [9, 4], "FP32")
    item.set_data_from_numpy(np.ones((9, 4), np.float32))
    with pytest.raises(InferenceServerException, match="batch-size must be <= 4"):
        client.infer("heads", [item])
    client.close()
    grpc = grpcclient.InferenceServerClient(server.grpc_address)
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="heads")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    request.raw_input_contents.append(np.ones(4, np.float32).tobytes())
    with pytest.raises(Exception, match="contents field must not be specified"):
        grpc._client_stub.ModelInfer(request)  # type: ignore[attr-defined]
    grpc.close()


def test_an_unservable_folder_is_reported_with_its_reason(server: GatewayProcess) -> None:
    client = http(server)
    index = client.get_model_repository_index(headers={"Authorization": "Bearer manage"})
    broken = [entry for entry in index if entry["name"] == "broken"]
    assert broken and broken[0]["state"] == "UNAVAILABLE"
    assert "no version folder" in broken[0]["reason"]
    assert "broken" in server.output()
    metadata = client.get_server_metadata()
    assert {"model_configuration", "statistics", "classification"} <= set(metadata["extensions"])
    client.close()
