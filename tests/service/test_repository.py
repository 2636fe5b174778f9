"""Model repository: versions, the management API, broken models, reloads under load."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from service.app import create_app
from service.settings import Settings
from tests.conftest import wait_ready
from tests.tiny_models import classifier, full_store, slow_model

TOKEN = "manage-me"
INFER_TOKEN = "infer-me"
ROW = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@pytest.fixture
async def managed(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Path]]:
    store = full_store(tmp_path / "store")
    settings = Settings(
        model_store=store,
        management_token=SecretStr(TOKEN),
        inference_token=SecretStr(INFER_TOKEN),
        _env_file=None,
    )  # type: ignore[call-arg]
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await wait_ready(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://gateway",
            headers={"Authorization": f"Bearer {INFER_TOKEN}"},
        ) as client:
            yield app, client, store


def manage() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


async def test_tokens_are_separate(managed: tuple[FastAPI, httpx.AsyncClient, Path]) -> None:
    _, client, _ = managed
    assert (await client.post("/v2/models/tab/infer", json=ROW)).status_code == 200
    anonymous = await client.post("/v2/models/tab/infer", json=ROW, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "missing bearer token"
    wrong = await client.post(
        "/v2/models/tab/infer", json=ROW, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    other_kind = await client.post("/v2/models/tab/infer", json=ROW, headers=manage())
    assert other_kind.status_code == 403
    assert (await client.post("/v2/repository/index")).status_code == 403
    assert (await client.post("/v2/repository/index", headers=manage())).status_code == 200
    assert (await client.get("/v2/health/ready", headers={"Authorization": ""})).status_code == 200


async def test_repository_api_is_off_without_a_management_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/repository/index")
    assert response.status_code == 404
    assert "disabled" in response.json()["error"]


async def test_highest_version_is_the_default_and_versions_are_addressable(
    managed: tuple[FastAPI, httpx.AsyncClient, Path],
) -> None:
    _, client, store = managed
    classifier(store, version=2, classes=3)
    loaded = await client.post("/v2/repository/models/tab/load", headers=manage())
    assert loaded.status_code == 200, loaded.text
    meta = (await client.get("/v2/models/tab")).json()
    assert meta["versions"] == ["1", "2"]
    latest = (await client.post("/v2/models/tab/infer", json=ROW)).json()
    assert latest["model_version"] == "2"
    pinned = (await client.post("/v2/models/tab/versions/1/infer", json=ROW)).json()
    assert pinned["model_version"] == "1"
    index = (await client.post("/v2/repository/index", headers=manage())).json()
    assert {(e["name"], e["version"], e["state"]) for e in index} >= {
        ("tab", "1", "READY"),
        ("tab", "2", "READY"),
    }


async def test_loading_a_new_version_under_load_drops_nothing(
    managed: tuple[FastAPI, httpx.AsyncClient, Path],
) -> None:
    _, client, store = managed
    stop = asyncio.Event()
    codes: list[int] = []
    reached = asyncio.Event()
    target = [50]

    async def traffic() -> None:
        while not stop.is_set():
            codes.append((await client.post("/v2/models/tab/infer", json=ROW)).status_code)
            if len(codes) >= target[0]:
                reached.set()

    senders = [asyncio.create_task(traffic()) for _ in range(8)]
    await reached.wait()
    classifier(store, version=3)
    assert (
        await client.post("/v2/repository/models/tab/load", headers=manage())
    ).status_code == 200
    reached.clear()
    target[0] = len(codes) + 50
    await reached.wait()
    stop.set()
    await asyncio.gather(*senders)
    assert set(codes) == {200}
    assert (await client.post("/v2/models/tab/infer", json=ROW)).json()["model_version"] == "3"


async def test_unload_then_load(managed: tuple[FastAPI, httpx.AsyncClient, Path]) -> None:
    _, client, _ = managed
    assert (
        await client.post("/v2/repository/models/reg/unload", headers=manage())
    ).status_code == 200
    assert (await client.get("/v2/models/reg")).status_code == 404
    index = (await client.post("/v2/repository/index", headers=manage())).json()
    assert {"name": "reg", "version": "1", "state": "UNLOADED", "reason": ""} in index
    assert (
        await client.post("/v2/repository/models/reg/load", headers=manage())
    ).status_code == 200
    assert (await client.get("/v2/models/reg/ready")).status_code == 200
    missing = await client.post("/v2/repository/models/..%2Fetc/load", headers=manage())
    assert missing.status_code in (400, 404)
    assert "error" in missing.json()


async def test_broken_models_fail_alone(tmp_path: Path) -> None:
    store = full_store(tmp_path / "store")
    corrupt = classifier(store, name="corrupt")
    (corrupt / "model.onnx").write_bytes(b"not an onnx file")
    invalid = classifier(store, name="invalid")
    (invalid / "model.json").write_text('{"name": "invalid", "version": 1, "task": "dance"}')
    app = create_app(Settings(model_store=store, _env_file=None))  # type: ignore[call-arg]
    async with app.router.lifespan_context(app):
        await wait_ready(app)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as client:
            assert (await client.get("/v2/health/ready")).status_code == 200
            for name in ("corrupt", "invalid"):
                ready = await client.get(f"/v2/models/{name}/ready")
                assert ready.status_code == 503
                infer = await client.post(f"/v2/models/{name}/infer", json=ROW)
                assert infer.status_code == 503
                assert name in infer.json()["error"]
            assert (await client.post("/v2/models/tab/infer", json=ROW)).status_code == 200
            metrics = (await client.get("/metrics")).text
            assert 'gateway_model_ready{model="corrupt",version="1"} 0.0' in metrics
        repository = app.state.dataplane.repository
        assert "invalid manifest" in repository.get("invalid").reason
        assert "cannot load model.onnx" in repository.get("corrupt").reason


async def test_deadline_header_answers_504(tmp_path: Path) -> None:
    store = tmp_path / "store"
    slow_model(store)
    app = create_app(Settings(model_store=store, _env_file=None))  # type: ignore[call-arg]
    body = {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": [1, 1024],
                "data": np.full(1024, 0.5).tolist(),
            }
        ]
    }
    async with app.router.lifespan_context(app):
        await wait_ready(app)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as client:
            busy = [
                asyncio.create_task(client.post("/v2/models/slow/infer", json=body))
                for _ in range(20)
            ]
            late = await client.post(
                "/v2/models/slow/infer", json=body, headers={"X-Request-Timeout-Ms": "1"}
            )
            assert late.status_code == 504
            assert "deadline" in late.json()["error"]
            params = {**body, "parameters": {"timeout": 1000}}
            assert (await client.post("/v2/models/slow/infer", json=params)).status_code == 504
            assert {r.status_code for r in await asyncio.gather(*busy)} == {200}
