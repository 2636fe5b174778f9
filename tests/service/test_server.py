"""A real gateway process: stock tritonclient in both modes, uploads, SIGTERM drain."""

from __future__ import annotations

import asyncio
import io
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from PIL import Image

from tests.servers import gateway
from tests.tiny_models import full_store, slow_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("gateway")
    store = full_store(root / "store")
    with gateway(store, root) as server:
        yield server, store


def direct(store: Path, model: str, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(store / model / "1" / "model.onnx"))
    result: np.ndarray = session.run(None, feed)[0]
    return result


@pytest.mark.parametrize("binary", [False, True])
def test_stock_tritonclient_tabular(running, binary: bool) -> None:  # type: ignore[no-untyped-def]
    server, store = running
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.is_server_ready()
    assert client.is_model_ready("tab")
    assert client.get_model_metadata("tab")["inputs"][0]["name"] == "features"
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    request = triton.InferInput("features", [5, 4], "FP32")
    request.set_data_from_numpy(x, binary_data=binary)
    wanted = triton.InferRequestedOutput("probabilities", binary_data=binary)
    result = client.infer("tab", [request], outputs=[wanted], request_id="abc")
    assert result.get_response()["id"] == "abc"
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), direct(store, "tab", {"features": x}), atol=1e-6
    )
    # No outputs named: tritonclient asks for binary outputs of everything.
    everything = client.infer("tab", [request])
    np.testing.assert_allclose(
        everything.as_numpy("probabilities"), direct(store, "tab", {"features": x}), atol=1e-6
    )


@pytest.mark.parametrize("binary", [False, True])
def test_stock_tritonclient_text_and_image(running, binary: bool) -> None:  # type: ignore[no-untyped-def]
    server, store = running
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    texts = np.array([b"hello world", b"fast models batch"], dtype=object)
    text_input = triton.InferInput("text", [2], "BYTES")
    text_input.set_data_from_numpy(texts, binary_data=binary)
    embedding = client.infer("txt", [text_input]).as_numpy("embedding")
    assert embedding.shape == (2, 6)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    pixels = np.random.default_rng(1).integers(0, 256, size=(3, 1, 8, 8), dtype=np.uint8)
    image_input = triton.InferInput("images", [3, 1, 8, 8], "UINT8")
    image_input.set_data_from_numpy(pixels, binary_data=binary)
    probabilities = client.infer("img", [image_input]).as_numpy("probabilities")
    np.testing.assert_allclose(probabilities, direct(store, "img", {"images": pixels}), atol=1e-6)


def test_tritonclient_sees_errors(running) -> None:  # type: ignore[no-untyped-def]
    server, _ = running
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    bad = triton.InferInput("features", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(Exception, match="shape"):
        client.infer("tab", [bad])
    assert client.is_server_live()


def test_png_upload_end_to_end(running) -> None:  # type: ignore[no-untyped-def]
    server, store = running
    pixels = np.random.default_rng(5).integers(0, 256, size=(8, 8), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    answer = httpx.post(f"{server.url}/predictions/img", content=buffer.getvalue()).json()
    expected = direct(store, "img", {"images": pixels.reshape(1, 1, 8, 8)})[0]
    assert next(iter(answer)) == str(int(np.argmax(expected)))


def test_body_over_the_limit_is_413_unread(tmp_path: Path) -> None:
    store = full_store(tmp_path / "store")
    with gateway(store, tmp_path, env={"GATEWAY_MAX_BODY_BYTES": "4096"}) as server:
        response = httpx.post(f"{server.url}/predictions/img", content=b"x" * 100_000)
        assert response.status_code == 413
        assert "error" in response.json()
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


async def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    store = tmp_path / "store"
    slow_model(store)
    body = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, 1024], "data": [0.5] * 1024}
        ]
    }
    with gateway(store, tmp_path, env={"GATEWAY_DRAIN_SECONDS": "30"}) as server:
        async with httpx.AsyncClient(
            base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=128)
        ) as client:
            sent = [
                asyncio.create_task(client.post("/v2/models/slow/infer", json=body))
                for _ in range(96)
            ]
            # Wait until the server holds them all (queued, computing or answered), then signal:
            # one that arrived after the signal would rightly be refused.
            await _until_received(client, len(sent), sent)
            server.process.send_signal(signal.SIGTERM)
            flipped = time.monotonic()
            while (await client.get("/v2/health/ready")).status_code == 200:
                assert time.monotonic() - flipped < 1.0, "readiness did not flip within 1 s"
                await asyncio.sleep(0.005)
            late = await client.post("/v2/models/slow/infer", json=body)
            assert late.status_code == 503
            assert "Retry-After" in late.headers
            responses = await asyncio.gather(*sent)
        assert [r.status_code for r in responses].count(200) == 96
        assert server.process.wait(timeout=30) == 0


async def _until_received(
    client: httpx.AsyncClient, count: int, answered: list[asyncio.Task[httpx.Response]]
) -> None:
    """Poll until the server has taken ``count`` requests: in flight, or among ``answered``."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = (await client.get("/metrics")).text
        done = sum(task.done() for task in answered)
        if _metric(text, "gateway_inflight_requests{") + done >= count:
            return
        assert done < len(answered), "the held requests finished first"
        await asyncio.sleep(0.005)
    raise AssertionError(f"the server never took {count} requests")


def _metric(text: str, prefix: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


async def test_client_that_disconnects_while_queued_is_not_computed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    slow_model(store)
    body = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, 1024], "data": [0.5] * 1024}
        ]
    }
    with gateway(store, tmp_path) as server:
        async with (
            httpx.AsyncClient(
                base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=128)
            ) as patient,
            httpx.AsyncClient(
                base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=64)
            ) as impatient,
        ):
            kept = [
                asyncio.create_task(patient.post("/v2/models/slow/infer", json=body))
                for _ in range(64)
            ]
            await _until_received(patient, 64, kept)
            abandoned = [
                asyncio.create_task(impatient.post("/v2/models/slow/infer", json=body))
                for _ in range(32)
            ]
            # The server has read every abandoned request (they are queued behind the patient
            # ones, one row at a time); only then do their clients hang up.
            await _until_received(patient, 64 + 32, kept)
            for task in abandoned:
                task.cancel()
            await asyncio.gather(*abandoned, return_exceptions=True)
            await impatient.aclose()
            assert [r.status_code for r in await asyncio.gather(*kept)] == [200] * 64
            metrics = (await patient.get("/metrics")).text
        computed = _metric(metrics, 'gateway_batch_size_count{model="slow"')
        gone = _metric(metrics, 'gateway_requests_total{code="499",model="slow"')
        # Requests whose clients left while queued were dropped, not computed.
        assert gone >= 16
        assert computed <= 64 + 32 - gone + 2  # a leaver may already be computing
