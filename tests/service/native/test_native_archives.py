"""`GATEWAY_BACKEND=torchserve-native` on the project's archives, side by side with a real
TorchServe 0.12 serving the very same `.mar` files: every kind of input, the same answers."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image

from service.backends.tensor_payload import CONTENT_TYPE, decode_feed, encode_feed
from tests.handlers.servers import TorchServeStack, assert_answers_close, shared_torchserve
from tests.servers import GatewayProcess, gateway

# Module fixtures start a TorchServe and gateways (minutes on 2 busy cores) in the first test.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NATIVE = {"GATEWAY_BACKEND": "torchserve-native"}


@pytest.fixture(scope="module")
def torchserve(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> TorchServeStack:
    return shared_torchserve(pytestconfig, tmp_path_factory)


@pytest.fixture(scope="module")
def native(
    torchserve: TorchServeStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    logs = tmp_path_factory.mktemp("native-logs")
    with gateway(torchserve.store, logs, env=NATIVE, timeout_s=180) as server:
        yield server


@pytest.fixture
async def sessions(
    torchserve: TorchServeStack, native: GatewayProcess
) -> AsyncIterator[tuple[aiohttp.ClientSession, aiohttp.ClientSession]]:
    token = {"Authorization": f"Bearer {torchserve.server.token}"}
    async with (
        aiohttp.ClientSession(torchserve.server.inference_url, headers=token) as real,
        aiohttp.ClientSession(native.url) as ours,
    ):
        yield real, ours


async def post(
    session: aiohttp.ClientSession, path: str, body: bytes | aiohttp.FormData, content_type: str
) -> tuple[int, str, bytes]:
    headers = {"Content-Type": content_type} if content_type else {}
    async with session.post(path, data=body, headers=headers) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


def png(value: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (8, 8), value).save(buffer, "PNG")
    return buffer.getvalue()


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def same_answer(ours: tuple[int, str, bytes], real: tuple[int, str, bytes]) -> None:
    assert ours[0] == real[0], (ours, real)
    assert ours[1] == real[1], (ours, real)
    if real[1].startswith("application/json"):
        assert_answers_close(json.loads(ours[2]), json.loads(real[2]))
    elif real[1] == CONTENT_TYPE:
        expected, actual = decode_feed(real[2]), decode_feed(ours[2])
        assert set(actual) == set(expected)
        for name in expected:
            np.testing.assert_allclose(actual[name], expected[name], atol=1e-4)
    else:
        assert ours[2] == real[2]


def cases() -> list[tuple[str, bytes, str]]:
    """Every input kind of every task: (model, body, content type); good and bad ones."""
    images = [png(value) for value in (0, 90, 255)]
    return [
        ("tab", as_json({"f0": 5.1, "f1": 3.5, "f2": 1.4, "f3": 0.2}), "application/json"),
        ("tab", as_json([[1, 2, 3, 4], [0.5, 0.1, 0.2, 0.3]]), "application/json"),
        ("tab", as_json({"f0": 1}), "application/json"),  # 400: missing features
        ("tab", b"{not json", "application/json"),  # 400: not JSON
        ("reg", as_json({"instances": [[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]]}), "application/json"),
        ("img", images[0], "image/png"),
        ("img", as_json({"b64": base64.b64encode(images[1]).decode()}), "application/json"),
        ("img", b"not an image", "image/png"),  # 400
        ("img", encode_feed({"images": np.zeros((2, 1, 8, 8), np.uint8)}), CONTENT_TYPE),
        ("txt", b"serving models natively", "text/plain"),
        ("txt", as_json(["a b", "hello world"]), "application/json"),
        ("fc", as_json({"series": [float(v) for v in range(12)]}), "application/json"),
        ("fc", as_json({"series": [1.0, 2.0]}), "application/json"),  # 400: wrong length
    ]


async def test_every_input_kind_answers_as_torchserve(
    sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession],
) -> None:
    real, ours = sessions
    for model, body, content_type in cases():
        expected = await post(real, f"/predictions/{model}", body, content_type)
        actual = await post(ours, f"/predictions/{model}", body, content_type)
        same_answer(actual, expected)
    statuses = [(await post(ours, f"/predictions/{m}", b, c))[0] for m, b, c in cases()]
    assert 400 in statuses and 200 in statuses


async def test_multipart_uploads_answer_as_torchserve(
    sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession],
) -> None:
    real, ours = sessions

    def form() -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field("data", png(10), filename="a.png", content_type="image/png")
        data.add_field("other", png(200), filename="b.png", content_type="image/png")
        return data

    async def send(session: aiohttp.ClientSession) -> tuple[int, str, bytes]:
        async with session.post("/predictions/img", data=form()) as response:
            return response.status, response.headers["Content-Type"], await response.read()

    same_answer(await send(ours), await send(real))


async def test_concurrent_requests_are_batched_and_a_bad_one_fails_alone(
    native: GatewayProcess,
) -> None:
    async with aiohttp.ClientSession(native.url) as session:
        for _attempt in range(5):
            bodies = [as_json([1, 2, 3, 4])] * 15 + [as_json({"f0": 1})]
            answers = await asyncio.gather(
                *(session.post("/predictions/tab", data=b, headers=_JSON) for b in bodies)
            )
            statuses = [answer.status for answer in answers]
            batch = max(int(answer.headers.get("x-ts-batch-size", "1")) for answer in answers)
            for answer in answers:
                answer.release()
            assert statuses == [200] * 15 + [400]
            if batch > 1:
                return
    pytest.fail("the gateway never formed a batch for the handler")


_JSON = {"Content-Type": "application/json"}


async def test_gateway_errors_take_torchserve_form(
    sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession],
) -> None:
    real, ours = sessions
    expected = await post(real, "/predictions/no-such-model", b"{}", "application/json")
    actual = await post(ours, "/predictions/no-such-model", b"{}", "application/json")
    assert actual[0] == expected[0] == 404
    ours_body, real_body = json.loads(actual[2]), json.loads(expected[2])
    assert set(ours_body) == set(real_body) == {"code", "type", "message"}
    assert ours_body["type"] == real_body["type"]


async def test_archives_with_model_json_serve_v2_and_match_onnx_runtime(
    torchserve: TorchServeStack, native: GatewayProcess
) -> None:
    reference = torchserve.reference("tab")
    rows = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.2, 5.0, 1.5]]
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 4], "data": rows}]}
    async with (
        aiohttp.ClientSession(native.url) as session,
        session.post("/v2/models/tab/infer", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        answer = await response.json()
    expected = reference.outputs({"features": np.array(rows, np.float32)})
    (output,) = answer["outputs"]
    np.testing.assert_allclose(
        np.array(output["data"]).reshape(output["shape"]),
        expected[output["name"]],
        atol=1e-4,
    )


async def test_torchserve_metric_aliases_are_exported(native: GatewayProcess) -> None:
    async with aiohttp.ClientSession(native.url) as session:
        async with session.post("/predictions/reg", data=as_json([1.0, 2.0, 3.0]), headers=_JSON):
            pass
        async with session.get("/metrics") as response:
            text = await response.text()
    for name in (
        'ts_inference_requests_total{model_name="reg"',
        'ts_inference_latency_microseconds_total{model_name="reg"',
        'ts_queue_latency_microseconds_total{model_name="reg"',
    ):
        assert any(
            line.startswith(name.split("{")[0]) and 'model_name="reg"' in line
            for line in text.splitlines()
        ), name


def test_archives_with_model_json_serve_stock_grpc_clients(
    torchserve: TorchServeStack, native: GatewayProcess
) -> None:
    import tritonclient.grpc as grpcclient

    rows = np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)
    item = grpcclient.InferInput("features", list(rows.shape), "FP32")
    item.set_data_from_numpy(rows)
    client = grpcclient.InferenceServerClient(native.grpc_address)
    try:
        assert client.is_model_ready("tab")
        result = client.infer("tab", [item])
    finally:
        client.close()
    expected = torchserve.reference("tab").outputs({"features": rows})
    name = next(iter(expected))
    np.testing.assert_allclose(result.as_numpy(name), expected[name], atol=1e-4)
