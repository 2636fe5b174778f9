"""The gateway's `torchserve` backend: against a fake TorchServe (errors, keys, modes), then
end to end through a real gateway in front of a real TorchServe."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from aiohttp import web
from PIL import Image

from deploy.torchserve.archive import build_archives
from deploy.torchserve.launcher import TorchServe, launch
from service.backends.tensor_payload import CONTENT_TYPE, decode_feed, encode_feed
from service.backends.torchserve import TorchServeBackend
from service.errors import (
    BackendError,
    BackendUnavailable,
    DeadlineExceeded,
    InvalidInput,
    PayloadTooLarge,
)
from service.manifest import Manifest
from service.settings import Settings
from tests import tiny_models
from tests.handlers import torch_models
from tests.handlers.servers import (
    TorchServeStack,
    assert_answers_close,
    require_java,
    shared_torchserve,
)
from tests.servers import GatewayProcess, free_port, gateway

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeTorchServe:
    """Answers like TorchServe: key check, /ping, npz predictions (features @ [1, 2, 3])."""

    key: str = "key-1"
    predict: Handler | None = None
    requests: list[int] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ping", self._ping)
        app.router.add_post("/predictions/{name}/{version}", self._predictions)
        return app

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.key}"

    @staticmethod
    def _refused() -> web.Response:
        body = {"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed"}
        return web.json_response(body, status=400)

    async def _ping(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refused()
        return web.json_response({"status": "Healthy"})

    async def _predictions(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._refused()
        if self.predict is not None:
            return await self.predict(request)
        feed = decode_feed(await request.read())
        self.requests.append(len(feed["features"]))
        prediction = feed["features"] @ np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
        return web.Response(body=encode_feed({"prediction": prediction}), content_type=CONTENT_TYPE)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTorchServe]:
    server = FakeTorchServe()
    runner = web.AppRunner(server.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server.url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    return Manifest.read(tiny_models.regressor(tmp_path))


def settings_for(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"torchserve_url": url, "torchserve_token": "key-1", **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def backend(fake: FakeTorchServe, manifest: Manifest) -> AsyncIterator[TorchServeBackend]:
    ready = TorchServeBackend(manifest, settings_for(fake.url))
    await ready.load()
    yield ready
    await ready.close()


FEATURES = {"features": np.array([[1, 1, 1], [1, 0, 0], [0, 0, 2]], dtype=np.float32)}


async def test_batched_mode_sends_one_request_per_batch(
    fake: FakeTorchServe, backend: TorchServeBackend
) -> None:
    outputs = await backend.infer(FEATURES)
    np.testing.assert_array_equal(outputs["prediction"], [[6.0], [1.0], [6.0]])
    assert fake.requests == [3]
    assert backend.description.startswith("torchserve[batched]")


async def test_forward_mode_sends_one_request_per_row(
    fake: FakeTorchServe, manifest: Manifest
) -> None:
    forward = TorchServeBackend(manifest, settings_for(fake.url, torchserve_mode="forward"))
    await forward.load()
    try:
        outputs = await forward.infer(FEATURES)
    finally:
        await forward.close()
    np.testing.assert_array_equal(outputs["prediction"], [[6.0], [1.0], [6.0]])
    assert fake.requests == [1, 1, 1]


def answering(status: int, body: Any, delay_s: float = 0.0) -> Handler:
    async def predict(_request: web.Request) -> web.Response:
        await asyncio.sleep(delay_s)
        return web.json_response(body, status=status)

    return predict


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (400, InvalidInput, "missing features: ['x1']"),
        (413, PayloadTooLarge, "too big"),
        (404, BackendUnavailable, "Model not found"),
        (503, BackendUnavailable, "Model has no worker"),
        (507, BackendUnavailable, "Out of resources"),
        (500, BackendError, "Prediction failed"),
        (504, DeadlineExceeded, "timed out"),
    ],
)
async def test_torchserve_errors_are_mapped(
    fake: FakeTorchServe,
    backend: TorchServeBackend,
    status: int,
    error: type[Exception],
    message: str,
) -> None:
    fake.predict = answering(status, {"code": status, "type": "X", "message": message})
    with pytest.raises(error) as raised:
        await backend.infer(FEATURES)
    assert message in str(raised.value)
    assert type(raised.value) is error


async def test_no_answer_in_time_is_a_deadline(fake: FakeTorchServe, manifest: Manifest) -> None:
    fake.predict = answering(200, {}, delay_s=0.6)
    slow = TorchServeBackend(manifest, settings_for(fake.url, torchserve_timeout_s=0.2))
    await slow.load()
    try:
        with pytest.raises(DeadlineExceeded, match=r"within 0\.2 s"):
            await slow.infer(FEATURES)
    finally:
        await slow.close()


async def test_wrong_answers_are_backend_errors(
    fake: FakeTorchServe, backend: TorchServeBackend
) -> None:
    fake.predict = answering(200, [1, 2])
    with pytest.raises(BackendError, match="not application/x-safetensors"):
        await backend.infer(FEATURES)

    async def too_few_rows(_request: web.Request) -> web.Response:
        body = encode_feed({"prediction": np.zeros((1, 1), dtype=np.float32)})
        return web.Response(body=body, content_type=CONTENT_TYPE)

    fake.predict = too_few_rows
    with pytest.raises(BackendError, match="for 3 rows"):
        await backend.infer(FEATURES)


async def test_connection_refused_is_unavailable_at_once(manifest: Manifest) -> None:
    down = TorchServeBackend(manifest, settings_for(f"http://127.0.0.1:{free_port()}"))
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="TorchServe"):
        await down.load()
    assert not await down.healthy()
    await down.close()
    assert time.monotonic() - started < 1.0


async def test_a_new_key_is_read_from_the_key_file(
    fake: FakeTorchServe, manifest: Manifest, tmp_path: Path
) -> None:
    key_file = tmp_path / "key_file.json"

    def write_key(key: str) -> None:
        key_file.write_text(json.dumps({"inference": {"key": key}, "management": {"key": "m"}}))

    write_key("key-1")
    settings = settings_for(fake.url, torchserve_token=None, torchserve_key_file=key_file)
    rotating = TorchServeBackend(manifest, settings)
    await rotating.load()
    try:
        fake.key = "key-2"  # TorchServe restarted with new keys ...
        assert not await rotating.healthy()
        write_key("key-2")  # ... and wrote them to its key file
        assert await rotating.healthy()
        fake.key = "key-3"
        write_key("key-3")
        np.testing.assert_array_equal(
            (await rotating.infer(FEATURES))["prediction"][:, 0], [6, 1, 6]
        )
        fake.key = "key-4"
        with pytest.raises(BackendUnavailable, match="rejected the inference key"):
            await rotating.infer(FEATURES)
    finally:
        await rotating.close()


# --- end to end: a real gateway in front of a real TorchServe ------------------------------------


@pytest.fixture(scope="session")
def torchserve(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> TorchServeStack:
    return shared_torchserve(pytestconfig, tmp_path_factory)


def gateway_env(server: TorchServe, mode: str) -> dict[str, str]:
    return {
        "GATEWAY_TORCHSERVE_URL": server.inference_url,
        "GATEWAY_TORCHSERVE_KEY_FILE": str(server.key_file),
        "GATEWAY_TORCHSERVE_MODE": mode,
    }


@pytest.fixture(scope="module", params=["batched", "forward"])
def gateway_on_torchserve(
    request: pytest.FixtureRequest,
    torchserve: TorchServeStack,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    logs = tmp_path_factory.mktemp("logs")
    env = gateway_env(torchserve.server, request.param)
    with gateway(torchserve.store, logs, ["--backend", "torchserve"], env=env) as process:
        yield process


PREDICTION_CASES: list[tuple[str, Any]] = [
    ("tab", [0.5, -1.0, 2.0, 0.25]),
    ("tab", {"instances": [[1, 2, 3, 4], [4, 3, 2, 1], [0, 0, 0, 0]]}),
    ("reg", [[1.0, 2.0, 3.0], [-1.5, 0.0, 4.0]]),
    ("img", {"b64": ""}),  # filled in with an encoded image below
    ("txt", ["hello world", "fast batch serving models", "a"]),
]


@pytest.mark.integration
async def test_every_task_matches_in_process_onnx_runtime(
    gateway_on_torchserve: GatewayProcess, torchserve: TorchServeStack
) -> None:
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize((8, 8)).save(buffer, "PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    async with httpx.AsyncClient(base_url=gateway_on_torchserve.url, timeout=30) as client:
        for model, body in PREDICTION_CASES:
            if model == "img":
                body = {"b64": image}
            reference = torchserve.reference(model)
            inputs, many = reference.processor.inputs_from_body(
                orjson.dumps(body), "application/json"
            )
            expected = reference.predictions(reference.processor.feed(inputs))
            # Concurrent copies, so the gateway forms batches on the way to TorchServe.
            responses = await asyncio.gather(
                *(client.post(f"/predictions/{model}", json=body) for _ in range(6))
            )
            for response in responses:
                assert response.status_code == 200, response.text
                assert_answers_close(response.json(), expected if many else expected[0])
        v2 = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}]}
        response = await client.post("/v2/models/txt/infer", json=v2)
        reference = torchserve.reference("txt")
        expected_embedding = reference.outputs(reference.processor.tokenize(["hello"]))
        np.testing.assert_allclose(
            response.json()["outputs"][0]["data"], expected_embedding["embedding"][0], atol=1e-4
        )
        response = await client.post("/predictions/tab", json={"f0": 1})
        assert response.status_code == 400
        assert "missing features" in response.json()["error"]


@pytest.mark.integration
def test_gateway_token_guards_the_torchserve_backend(
    torchserve: TorchServeStack, tmp_path: Path
) -> None:
    env = {**gateway_env(torchserve.server, "batched"), "GATEWAY_INFERENCE_TOKEN": "sesame"}
    args = ["--backend", "torchserve", "--models", "reg"]
    with gateway(torchserve.store, tmp_path, args, env=env) as process:
        body = [1.0, 2.0, 3.0]
        assert httpx.post(f"{process.url}/predictions/reg", json=body).status_code == 401
        headers = {"Authorization": "Bearer sesame"}
        answer = httpx.post(f"{process.url}/predictions/reg", json=body, headers=headers)
        assert answer.status_code == 200
        assert answer.json() == pytest.approx(14.0)


@pytest.mark.integration
def test_torchserve_killed_then_back(tmp_path_factory: pytest.TempPathFactory) -> None:
    """503 within a second of TorchServe dying; serving again once it is back (new keys)."""
    require_java()
    root = tmp_path_factory.mktemp("kill")
    store = root / "store"
    torch_models.regressor(store)
    build_archives(store, store)
    server = launch(store, root / "work", ["reg"])
    try:
        env = gateway_env(server, "batched")
        with gateway(store, root, ["--backend", "torchserve"], env=env) as process:
            url = f"{process.url}/predictions/reg"
            assert httpx.post(url, json=[1.0, 1.0, 1.0]).json() == pytest.approx(6.0)
            old_key = server.token
            server.kill()
            started = time.monotonic()
            answer = httpx.post(url, json=[1.0, 1.0, 1.0], timeout=5)
            assert answer.status_code == 503
            assert "unavailable" in answer.json()["error"]
            assert time.monotonic() - started < 1.0
            ready = f"{process.url}/v2/models/reg/ready"
            while httpx.get(ready).status_code != 503:
                assert time.monotonic() - started < 1.0, "readiness did not flip within a second"
                time.sleep(0.05)

            server = launch(store, root / "work", ["reg"], ports=server.ports)
            assert server.token != old_key
            deadline = time.monotonic() + 30
            while httpx.get(ready).status_code != 200:
                assert time.monotonic() < deadline, "gateway did not recover"
                time.sleep(0.1)
            assert httpx.post(url, json=[1.0, 1.0, 1.0]).json() == pytest.approx(6.0)
    finally:
        server.stop()


async def test_the_batch_context_reaches_torchserve(fake: FakeTorchServe, tmp_path: Path) -> None:
    """With tracing on, TorchServe gets the batch span's `traceparent`, so its work joins the
    trace of the requests that batch served."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from service.app import create_app
    from service.tracing import Tracing
    from tests.conftest import wait_ready

    seen: list[str | None] = []

    async def predict(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("traceparent"))
        feed = decode_feed(await request.read())
        prediction = feed["features"] @ np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
        return web.Response(body=encode_feed({"prediction": prediction}), content_type=CONTENT_TYPE)

    store = tmp_path / "store"
    tiny_models.regressor(store)
    settings = settings_for(fake.url, model_store=store, backend="torchserve", tracing=True)
    exporter = InMemorySpanExporter()
    app = create_app(settings, tracing=Tracing(settings, processor=SimpleSpanProcessor(exporter)))
    async with app.router.lifespan_context(app):
        await wait_ready(app)
        fake.predict = predict
        body = {
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]
        }
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            assert (await client.post("/v2/models/reg/infer", json=body)).status_code == 200
    (batch,) = [span for span in exporter.get_finished_spans() if span.name == "batch"]
    context = batch.context
    (header,) = seen
    assert header is not None
    _version, trace_id, span_id, flags = header.split("-")
    assert (trace_id, span_id) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled
