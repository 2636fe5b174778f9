"""The gRPC service in-process with stock `tritonclient.grpc.aio`: answers equal to HTTP's,
typed and raw contents, streaming, errors as status codes, health, reflection, repository."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from tests.servers import sample_total
from tests.service.grpc.conftest import Served, grpc_settings, serve
from tests.tiny_models import classifier, slow_model


def rows(count: int = 3) -> np.ndarray:
    return np.random.default_rng(7).normal(size=(count, 4)).astype(np.float32)


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(8, 8), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def tensor(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    item = grpcclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


async def http_outputs(served: Served, model: str, body: dict[str, Any]) -> dict[str, np.ndarray]:
    response = await served.http.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text
    return {
        out["name"]: np.reshape(np.asarray(out["data"], dtype=np.float64), out["shape"])
        for out in response.json()["outputs"]
    }


def status(error: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(error.value.status())


async def test_health_and_metadata(served: Served) -> None:
    client = served.grpc
    assert await client.is_server_live()
    assert await client.is_server_ready()
    assert await client.is_model_ready("tab")
    metadata = await client.get_model_metadata("tab", as_json=True)
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert metadata["platform"] == "onnxruntime_onnx"
    http = (await served.http.get("/v2/models/tab")).json()
    assert metadata["outputs"][0]["name"] == http["outputs"][0]["name"]
    server = await client.get_server_metadata(as_json=True)
    assert server["name"] == (await served.http.get("/v2")).json()["name"]
    with pytest.raises(InferenceServerException) as error:
        await client.get_model_metadata("no-such-model")
    assert status(error) == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("compression", [None, "gzip"])
async def test_infer_equals_http_for_every_task(served: Served, compression: str | None) -> None:
    x = rows()
    result = await served.grpc.infer(
        "tab",
        [tensor("features", x, "FP32")],
        outputs=[grpcclient.InferRequestedOutput("probabilities")],
        request_id="req-7",
        compression_algorithm=compression,
    )
    assert result.get_response().id == "req-7"
    assert result.get_response().model_version == "1"
    body = {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [3, 4], "data": x.tolist()}]
    }
    expected = await http_outputs(served, "tab", body)
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), expected["probabilities"], atol=1e-5
    )

    texts = np.array([b"hello world", b"fast batch serving models"], dtype=object)
    answer = await served.grpc.infer("txt", [tensor("text", texts, "BYTES")])
    text_body = {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [2], "data": [t.decode() for t in texts]}
        ]
    }
    expected = await http_outputs(served, "txt", text_body)
    (name,) = expected
    np.testing.assert_allclose(answer.as_numpy(name), expected[name], atol=1e-5)

    images = np.array([png(1), png(2)], dtype=object)
    answer = await served.grpc.infer("img", [tensor("images", images, "BYTES")])
    http = await served.http.post(
        "/v1/models/img:predict",
        json={"instances": [{"b64": __import__("base64").b64encode(p).decode()} for p in images]},
    )
    assert http.status_code == 200, http.text
    first_output = next(iter(answer.get_response().outputs)).name
    np.testing.assert_allclose(
        answer.as_numpy(first_output), np.asarray(http.json()["predictions"]), atol=1e-5
    )


async def test_typed_contents_equal_raw_contents(served: Served) -> None:
    x = rows(2)
    channel = grpc.aio.insecure_channel(served.address)
    try:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        typed = pb.ModelInferRequest(model_name="tab", id="typed")
        item = typed.inputs.add(name="features", datatype="FP32", shape=[2, 4])
        item.contents.fp32_contents.extend(x.reshape(-1).tolist())
        raw = pb.ModelInferRequest(model_name="tab")
        raw.inputs.add(name="features", datatype="FP32", shape=[2, 4])
        raw.raw_input_contents.append(x.tobytes())
        answers = [await stub.ModelInfer(message) for message in (typed, raw)]
        assert answers[0].id == "typed"
        assert answers[0].raw_output_contents == answers[1].raw_output_contents
        short = pb.ModelInferRequest(model_name="tab")
        item = short.inputs.add(name="features", datatype="FP32", shape=[2, 4])
        item.contents.fp32_contents.extend([1.0, 2.0])
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.ModelInfer(short)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "2 elements for shape [2, 4]" in (error.value.details() or "")
    finally:
        await channel.close()


@pytest.mark.parametrize(
    ("model", "name", "array", "datatype", "message"),
    [
        ("tab", "features", np.zeros((1, 5), np.float32), "FP32", "shape"),
        ("tab", "features", np.zeros((1, 4), np.float64), "FP64", "must be FP32"),
        ("tab", "wrong", np.zeros((1, 4), np.float32), "FP32", "unknown input"),
        ("tab", "features", np.full((1, 4), np.nan, np.float32), "FP32", "NaN"),
        ("img", "images", np.array([b"not an image"], dtype=object), "BYTES", "image"),
    ],
)
async def test_bad_input_is_invalid_argument_and_harmless(
    served: Served, model: str, name: str, array: np.ndarray, datatype: str, message: str
) -> None:
    with pytest.raises(InferenceServerException) as error:
        await served.grpc.infer(model, [tensor(name, array, datatype)])
    assert status(error) == "StatusCode.INVALID_ARGUMENT"
    assert message in str(error.value.message())
    assert await served.grpc.is_server_ready()
    ok = await served.grpc.infer("tab", [tensor("features", rows(1), "FP32")])
    assert ok.as_numpy("probabilities").shape == (1, 3)


async def test_unknown_model_or_version_is_not_found(served: Served) -> None:
    for model, version in (("no-such-model", ""), ("tab", "9")):
        with pytest.raises(InferenceServerException) as error:
            await served.grpc.infer(
                model, [tensor("features", rows(1), "FP32")], model_version=version
            )
        assert status(error) == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as error:
        await served.grpc.infer(
            "tab",
            [tensor("features", rows(1), "FP32")],
            outputs=[grpcclient.InferRequestedOutput("nope")],
        )
    assert status(error) == "StatusCode.INVALID_ARGUMENT"


async def test_stream_answers_carry_ids_and_errors_stay_per_request(served: Served) -> None:
    x = rows(4)

    async def requests() -> AsyncIterator[dict[str, Any]]:
        for index in range(4):
            yield {
                "model_name": "tab",
                "inputs": [tensor("features", x[index : index + 1], "FP32")],
                "request_id": f"r{index}",
            }
        yield {
            "model_name": "tab",
            "inputs": [tensor("features", np.zeros((1, 9), np.float32), "FP32")],
            "request_id": "bad",
        }

    answers: dict[str, np.ndarray] = {}
    errors: list[str] = []
    async for result, error in served.grpc.stream_infer(requests()):
        if error is not None:
            errors.append(str(error))
            continue
        answers[result.get_response().id] = result.as_numpy("probabilities")
        if len(answers) == 4 and errors:
            break
    assert sorted(answers) == ["r0", "r1", "r2", "r3"]
    assert len(errors) == 1 and "shape" in errors[0]
    whole = await served.grpc.infer("tab", [tensor("features", x, "FP32")])
    stacked = np.concatenate([answers[f"r{i}"] for i in range(4)])
    np.testing.assert_allclose(stacked, whole.as_numpy("probabilities"), atol=1e-6)


async def test_metrics_count_grpc_requests(served: Served) -> None:
    await served.grpc.infer("tab", [tensor("features", rows(1), "FP32")])
    with pytest.raises(InferenceServerException):
        await served.grpc.infer("tab", [tensor("features", np.zeros((1, 2), np.float32), "FP32")])
    exposition = (await served.http.get("/metrics")).text
    labels = {"model": "tab", "version": "1", "protocol": "grpc"}
    assert sample_total(exposition, "gateway_requests_total", code="200", **labels) == 1
    assert sample_total(exposition, "gateway_requests_total", code="400", **labels) == 1


async def test_health_service_and_reflection(served: Served) -> None:
    channel = grpc.aio.insecure_channel(served.address)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await health.Check(health_pb2.HealthCheckRequest(service="other"))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        served.app.state.dataplane.draining = True
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(InferenceServerException) as unavailable:
            await served.grpc.infer("tab", [tensor("features", rows(1), "FP32")])
        assert str(unavailable.value.status()) == "StatusCode.UNAVAILABLE"
        served.app.state.dataplane.draining = False

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        async for reply in stub.ServerReflectionInfo(ask()):
            names = {service.name for service in reply.list_services_response.service}
            assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
    finally:
        await channel.close()


async def test_tokens_and_repository(tmp_path: Path) -> None:
    store = tmp_path / "store"
    classifier(store)
    settings = grpc_settings(store, inference_token="infer-secret", management_token="admin-secret")
    async for served in serve(settings):
        client = served.grpc
        x = [tensor("features", rows(1), "FP32")]
        with pytest.raises(InferenceServerException) as error:
            await client.infer("tab", x)
        assert status(error) == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as error:
            await client.infer("tab", x, headers={"authorization": "Bearer admin-secret"})
        assert status(error) == "StatusCode.PERMISSION_DENIED"
        answer = await client.infer("tab", x, headers={"authorization": "Bearer infer-secret"})
        assert answer.as_numpy("probabilities").shape == (1, 3)

        admin = {"authorization": "Bearer admin-secret"}
        with pytest.raises(InferenceServerException) as error:
            await client.get_model_repository_index(
                headers={"authorization": "Bearer infer-secret"}
            )
        assert status(error) == "StatusCode.PERMISSION_DENIED"
        index = await client.get_model_repository_index(headers=admin, as_json=True)
        assert [(m["name"], m["state"]) for m in index["models"]] == [("tab", "READY")]
        await client.unload_model("tab", headers=admin)
        with pytest.raises(InferenceServerException) as error:
            await client.infer("tab", x, headers={"authorization": "Bearer infer-secret"})
        assert status(error) == "StatusCode.NOT_FOUND"
        await client.load_model("tab", headers=admin)
        assert await client.is_model_ready("tab", headers={"authorization": "Bearer infer-secret"})


async def test_message_limit_is_resource_exhausted(tmp_path: Path) -> None:
    store = tmp_path / "store"
    classifier(store)
    async for served in serve(grpc_settings(store, grpc_max_message_bytes=64 * 1024)):
        big = np.zeros((1, 4), np.float32)
        item = tensor("features", big, "FP32")
        item._raw_content = b"\0" * (128 * 1024)  # larger than the limit, whatever it holds
        with pytest.raises(InferenceServerException) as error:
            await served.grpc.infer("tab", [item])
        assert status(error) == "StatusCode.RESOURCE_EXHAUSTED"
        assert await served.grpc.is_server_ready()


async def test_deadlines_answer_deadline_exceeded(tmp_path: Path) -> None:
    store = tmp_path / "store"
    slow_model(store)
    async for served in serve(grpc_settings(store)):
        x = np.full((1, 1024), 0.5, np.float32)
        busy = [
            asyncio.create_task(served.grpc.infer("slow", [tensor("features", x, "FP32")]))
            for _ in range(20)
        ]
        with pytest.raises(InferenceServerException) as error:
            await served.grpc.infer("slow", [tensor("features", x, "FP32")], client_timeout=0.005)
        assert status(error) == "StatusCode.DEADLINE_EXCEEDED"
        with pytest.raises(InferenceServerException) as error:
            await served.grpc.infer("slow", [tensor("features", x, "FP32")], timeout=1000)
        assert status(error) == "StatusCode.DEADLINE_EXCEEDED"
        results = await asyncio.gather(*busy)
        assert all(r.as_numpy("prediction").shape == (1, 1) for r in results)
        exposition = (await served.http.get("/metrics")).text
        labels = {"model": "slow", "version": "1", "protocol": "grpc"}
        assert sample_total(exposition, "gateway_requests_total", code="200", **labels) == 20
        assert sample_total(exposition, "gateway_requests_total", code="504", **labels) >= 1
