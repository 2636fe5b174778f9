"""Users' own archives in the native runtime: a stock-handler archive and a custom-handler
archive answer as a real TorchServe answers; a crashed or stalled worker is replaced; workers
scale through TorchServe's management API under load; SIGTERM leaves no worker behind."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest
from PIL import Image

from deploy.torchserve.launcher import TorchServe, launch
from tests.handlers.servers import assert_answers_close, require_java
from tests.servers import GatewayProcess, gateway
from tests.service.native.archives import custom_archive, stock_archive

# Module fixtures start a TorchServe and gateways (minutes on 2 busy cores) in the first test.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TOKEN = "manage-me"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("user-archives")
    out = root / "store"
    out.mkdir()
    custom_archive(out, root / "custom")
    stock_archive(out, root / "stock")
    return out


@pytest.fixture(scope="module")
def torchserve(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    require_java()
    server = launch(store, tmp_path_factory.mktemp("ts-work"), ["custom", "stock"], batch_size=None)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def native(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"GATEWAY_BACKEND": "torchserve-native", "GATEWAY_MANAGEMENT_TOKEN": TOKEN}
    with gateway(store, tmp_path_factory.mktemp("native-logs"), env=env, timeout_s=180) as server:
        yield server


@pytest.fixture
async def session(native: GatewayProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(native.url) as client:
        yield client


def jpeg(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, "JPEG")
    return buffer.getvalue()


async def answer(
    client: aiohttp.ClientSession, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    async with client.post(path, data=body, headers=headers or JSON) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


async def test_stock_and_custom_archives_answer_as_torchserve(
    torchserve: TorchServe, session: aiohttp.ClientSession
) -> None:
    token = {"Authorization": f"Bearer {torchserve.token}"}
    cases = [
        ("stock", jpeg((200, 30, 30)), {"Content-Type": "image/jpeg"}),
        ("stock", jpeg((10, 10, 240)), {}),
        ("custom", json.dumps({"value": 21}).encode(), JSON),
        ("custom", json.dumps({"other": 1}).encode(), JSON),  # the handler's own 422
    ]
    async with aiohttp.ClientSession(torchserve.inference_url, headers=token) as real:
        for model, body, headers in cases:
            expected = await answer(real, f"/predictions/{model}", body, headers)
            actual = await answer(session, f"/predictions/{model}", body, headers)
            assert actual[:2] == expected[:2], (model, actual, expected)
            assert_answers_close(json.loads(actual[2]), json.loads(expected[2]))
    assert (await answer(session, "/predictions/custom", b'{"other": 1}'))[0] == 422


async def test_a_stock_archive_answers_metadata_and_readiness_on_every_protocol(
    native: GatewayProcess, session: aiohttp.ClientSession
) -> None:
    """A `torch-model-archiver --version 1.0` archive: V2 metadata and readiness, by version
    too, and gRPC's, as for any model (they answered 500 / INTERNAL while versions were
    sorted as integers)."""
    import tritonclient.grpc as triton_grpc

    for path in ("/v2/models/stock", "/v2/models/stock/versions/1.0"):
        async with session.get(path) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
        assert body["name"] == "stock"
        assert body["versions"] == ["1.0"]
        assert body["platform"] == "torchserve-native"
        assert body["parameters"]["handler"] == "image_classifier"
        assert body["parameters"]["state"] == "READY"
    async with session.get("/v2/models/stock/versions/1.0/ready") as response:
        assert response.status == 200
        assert await response.json() == {"name": "stock", "version": "1.0", "ready": True}
    async with session.get("/v2/models/stock/versions/2.0/ready") as response:
        assert response.status == 404
    client = triton_grpc.InferenceServerClient(native.grpc_address)
    try:
        metadata = client.get_model_metadata("stock", "1.0")
        assert (metadata.name, list(metadata.versions)) == ("stock", ["1.0"])
        assert metadata.platform == "torchserve-native"
        assert client.is_model_ready("stock", "1.0")
        assert client.is_model_ready("stock")
    finally:
        client.close()


async def test_per_request_statuses_inside_one_batch(session: aiohttp.ClientSession) -> None:
    bodies = [{"value": i} for i in range(3)] + [{"nothing": 0}]
    for _attempt in range(10):
        answers = await asyncio.gather(
            *(answer(session, "/predictions/custom", json.dumps(b).encode()) for b in bodies)
        )
        assert [status for status, _, _ in answers] == [200, 200, 200, 422]
        assert [json.loads(body).get("double") for _, _, body in answers[:3]] == [0, 2, 4]
        if max(json.loads(body).get("batch", 1) for _, _, body in answers[:3]) > 1:
            return
    pytest.fail("the four requests never shared a batch")


async def _until_served(client: aiohttp.ClientSession, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await answer(client, "/predictions/custom", b'{"value": 1}'))[0] == 200:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the model never came back")


def _worker_pids(native: GatewayProcess) -> set[int]:
    children = psutil.Process(native.process.pid).children(recursive=True)
    return {child.pid for child in children}


async def test_a_crashing_worker_fails_its_batch_fast_and_is_replaced(
    native: GatewayProcess, session: aiohttp.ClientSession
) -> None:
    await _until_served(session)
    before = _worker_pids(native)
    started = time.monotonic()
    status, _, body = await answer(session, "/predictions/custom", b'{"crash": true}')
    assert status == 503, body
    assert time.monotonic() - started < 10
    await _until_served(session)
    assert _worker_pids(native) - before, "no new worker process"


async def test_a_stalled_worker_gets_504_after_response_timeout_and_is_replaced(
    session: aiohttp.ClientSession,
) -> None:
    await _until_served(session)
    status, _, body = await answer(session, "/predictions/custom", b'{"sleep": 30, "value": 1}')
    assert status == 504, body
    await _until_served(session)


async def test_scaling_through_the_management_api_under_load_drops_nothing(
    native: GatewayProcess, session: aiohttp.ClientSession
) -> None:
    await _until_served(session)
    manage = {"Authorization": f"Bearer {TOKEN}"}
    stop = asyncio.Event()

    async def load() -> list[int]:
        statuses = []
        while not stop.is_set():
            statuses.append((await answer(session, "/predictions/custom", b'{"value": 2}'))[0])
        return statuses

    clients = [asyncio.create_task(load()) for _ in range(8)]
    for count in (3, 1, 2):
        async with session.put(f"/models/custom?min_worker={count}", headers=manage) as response:
            assert response.status == 200, await response.text()
        async with session.get("/models/custom", headers=manage) as response:
            (described,) = await response.json()
        assert len(described["workers"]) == count
    stop.set()
    statuses = [status for client in clients for status in await client]
    assert statuses and set(statuses) == {200}
    async with session.get("/models/custom") as response:
        assert response.status == 401  # the management token is required


async def test_management_api_lists_registers_and_unregisters(
    session: aiohttp.ClientSession,
) -> None:
    manage = {"Authorization": f"Bearer {TOKEN}"}
    async with session.get("/models", headers=manage) as response:
        listed = {m["modelName"] for m in (await response.json())["models"]}
    assert listed == {"custom", "stock"}
    async with session.post("/models?url=http://evil/x.mar", headers=manage) as response:
        assert response.status == 400
        assert set(await response.json()) == {"code", "type", "message"}
    async with session.delete("/models/stock", headers=manage) as response:
        assert response.status == 200, await response.text()
    assert (await answer(session, "/predictions/stock", jpeg((1, 2, 3)), {}))[0] == 404
    async with session.post("/models?url=stock.mar", headers=manage) as response:
        assert response.status == 200, await response.text()
    assert (await answer(session, "/predictions/stock", jpeg((1, 2, 3)), {}))[0] == 200


async def test_sigterm_answers_in_flight_requests_and_leaves_no_worker(
    store: Path, tmp_path: Path
) -> None:
    env = {"GATEWAY_BACKEND": "torchserve-native", "GATEWAY_MODELS": "custom"}
    with gateway(store, tmp_path, env=env, timeout_s=180) as server:
        workers = _worker_pids(server)
        assert workers
        async with aiohttp.ClientSession(server.url) as client:
            slow = json.dumps({"sleep": 0.5, "value": 3}).encode()
            sent = [
                asyncio.create_task(answer(client, "/predictions/custom", slow)) for _ in range(8)
            ]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                async with client.get("/metrics") as response:
                    text = await response.text()
                if any(
                    line.startswith("gateway_inflight_requests{") and float(line.split()[-1]) >= 8
                    for line in text.splitlines()
                ):
                    break
                await asyncio.sleep(0.01)
            server.process.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*sent)
        assert [status for status, _, _ in results] == [200] * 8
        assert server.process.wait(timeout=60) == 0
    # Worker processes, and multiprocessing's fork server and resource tracker, leave with it.
    assert not await asyncio.to_thread(_still_running, workers, 15.0)


def _still_running(pids: set[int], timeout_s: float) -> list[int]:
    """The processes among `pids` still running after up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while (left := [pid for pid in pids if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
