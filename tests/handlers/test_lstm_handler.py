"""The trained LSTM forecaster through the TorchServe handler (TorchServe's own Context, its
TorchScript export) answers what the gateway answers over HTTP (its ONNX export)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.app import create_app
from service.settings import Settings
from tests.conftest import wait_ready
from tests.handlers.servers import assert_answers_close
from tests.handlers.test_manifest_handler import loaded, run
from tests.training.conftest import train
from training.series_data import load_co2

JSON = "application/json"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("lstm") / "store"
    assert train("lstm", "--model-store", store, "--epochs", "1", "--max-samples", "128") == 0
    return store


@pytest.fixture
async def gateway(store: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(model_store=store, _env_file=None))  # type: ignore[call-arg]
    async with app.router.lifespan_context(app):
        await wait_ready(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


def windows(count: int) -> list[list[float]]:
    values = load_co2().values
    return [[round(float(v), 2) for v in values[end - 30 : end]] for end in (300, 900, 1500, 2100)][
        :count
    ]


async def test_handler_answers_equal_the_gateways(store: Path, gateway: httpx.AsyncClient) -> None:
    series = windows(4)
    handler = loaded(store, "lstm")
    requests = [
        ({"body": {"series": series[0]}}, JSON),  # TorchServe hands JSON over parsed
        ({"body": bytearray(json.dumps({"series": series[1]}).encode())}, ""),
        ({"body": json.dumps({"series": series[2]})}, "text/plain"),
        ({"body": {"instances": [series[3], series[0]]}}, JSON),
        ({"body": {"series": series[0][:29]}}, JSON),
        ({"body": {"series": [*series[0][:29], float("nan")]}}, JSON),
    ]
    answers, context = run(handler, requests)
    statuses = [context.get_response_status(i)[0] for i in range(len(requests))]
    assert statuses == [200, 200, 200, 200, 400, 400]
    assert "exactly 30 values" in json.loads(answers[4])["message"]
    assert "NaN" in json.loads(answers[5])["message"]
    for index, body in enumerate(
        [{"series": series[0]}, {"series": series[1]}, {"series": series[2]}]
    ):
        from_gateway = await gateway.post("/predictions/lstm", json=body)
        assert from_gateway.status_code == 200
        assert_answers_close(json.loads(answers[index]), from_gateway.json())
        forecast = json.loads(answers[index])["forecast"]
        assert len(forecast) == 1 and 300 < forecast[0] < 400
    batch = await gateway.post("/predictions/lstm", json={"instances": [series[3], series[0]]})
    assert_answers_close(json.loads(answers[3]), batch.json())
    refused = await gateway.post("/predictions/lstm", json={"series": series[0][:29]})
    assert refused.status_code == 400
    assert json.loads(answers[4])["message"] == refused.json()["error"]


async def test_v2_tensor_answers_match(store: Path, gateway: httpx.AsyncClient) -> None:
    from service.backends.tensor_payload import CONTENT_TYPE, decode_feed, encode_feed

    rows = np.asarray(windows(3), dtype=np.float32).reshape(3, 30, 1)
    answers, _ = run(
        loaded(store, "lstm"), [({"body": encode_feed({"series": rows})}, CONTENT_TYPE)]
    )
    from_handler = decode_feed(answers[0])["forecast"]
    body = {
        "inputs": [
            {
                "name": "series",
                "datatype": "FP32",
                "shape": [3, 30, 1],
                "data": rows.reshape(-1).tolist(),
            }
        ]
    }
    answer = await gateway.post("/v2/models/lstm/infer", json=body)
    from_gateway = np.asarray(answer.json()["outputs"][0]["data"]).reshape(3, 1)
    np.testing.assert_allclose(from_handler, from_gateway, atol=1e-4)
