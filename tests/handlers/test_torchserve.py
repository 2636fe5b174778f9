"""The handlers in a real TorchServe: what TorchServe users send, under concurrent load."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from multidict import CIMultiDict
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from handlers.manifest_handler import BATCH_HEADER
from service.backends.tensor_payload import CONTENT_TYPE, decode_feed, encode_feed
from tests.handlers.servers import TorchServeStack, assert_answers_close, shared_torchserve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def torchserve(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> TorchServeStack:
    return shared_torchserve(pytestconfig, tmp_path_factory)


@pytest.fixture
async def http(torchserve: TorchServeStack) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {torchserve.server.token}"}
    async with aiohttp.ClientSession(torchserve.server.inference_url, headers=headers) as session:
        yield session


class Answer:
    def __init__(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def batch(self) -> int:
        return int(self.headers.get(BATCH_HEADER, "0"))


async def post(http: aiohttp.ClientSession, model: str, body: bytes, content_type: str) -> Answer:
    headers = {"Content-Type": content_type}
    async with http.post(f"/predictions/{model}", data=body, headers=headers) as response:
        return Answer(response.status, CIMultiDict(response.headers), await response.read())


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), value).save(buffer, "PNG")
    return buffer.getvalue()


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


async def test_concurrent_mixed_requests_match_onnx_runtime(
    torchserve: TorchServeStack, http: aiohttp.ClientSession
) -> None:
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(8, 4)).round(3).tolist()
    images = [png(int(value)) for value in rng.integers(0, 256, size=8)]
    texts = ["hello world", "fast batch", "serving models", "a b"] * 2
    requests: list[tuple[str, bytes, str, Any]] = []
    tab, img, txt = (torchserve.reference(name) for name in ("tab", "img", "txt"))
    for i in range(8):
        expected_tab = tab.predictions(tab.processor.feed_from_instances([rows[i]]))[0]
        named = {f"f{j}": value for j, value in enumerate(rows[i])}
        body = as_json(rows[i]) if i % 2 else as_json(named)
        requests.append(("tab", body, "application/json", expected_tab))
        expected_img = img.predictions(img.processor.feed_from_payload(images[i]))[0]
        if i % 2:
            requests.append(("img", images[i], "image/png", expected_img))
        else:
            b64 = {"b64": base64.b64encode(images[i]).decode()}
            requests.append(("img", as_json(b64), "application/json", expected_img))
        expected_txt = txt.predictions(txt.processor.feed_from_payload(texts[i].encode()))[0]
        requests.append(("txt", texts[i].encode(), "text/plain", expected_txt))
    answers = await asyncio.gather(
        *(post(http, model, body, content_type) for model, body, content_type, _ in requests)
    )
    for (model, _, _, expected), answer in zip(requests, answers, strict=True):
        assert answer.status == 200, (model, answer.body)
        assert_answers_close(answer.json(), expected)
    assert max(answer.batch for answer in answers) > 1, "TorchServe never formed a batch"


async def test_a_bad_request_in_a_batch_gets_its_own_400(http: aiohttp.ClientSession) -> None:
    for _attempt in range(5):
        bodies = [as_json([1, 2, 3, 4])] * 7 + [as_json({"f0": 1})]
        answers = await asyncio.gather(*(post(http, "tab", b, "application/json") for b in bodies))
        assert [answer.status for answer in answers] == [200] * 7 + [400]
        assert "missing features" in answers[-1].json()["message"]
        if answers[-1].batch > 1:
            return  # the bad request shared its batch with good ones
    pytest.fail("the bad request never shared a batch")


async def test_json_batches_and_tensor_payloads(
    torchserve: TorchServeStack, http: aiohttp.ClientSession
) -> None:
    reg = torchserve.reference("reg")
    features = [[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]]
    answer = await post(http, "reg", as_json({"instances": features}), "application/json")
    assert_answers_close(
        answer.json(), reg.predictions(reg.processor.feed_from_instances(features))
    )
    images = np.arange(3 * 64, dtype=np.uint8).reshape(3, 1, 8, 8)
    answer = await post(http, "img", encode_feed({"images": images}), CONTENT_TYPE)
    assert answer.status == 200
    assert answer.headers["content-type"] == CONTENT_TYPE
    expected = torchserve.reference("img").outputs({"images": images})["probabilities"]
    np.testing.assert_allclose(decode_feed(answer.body)["probabilities"], expected, atol=1e-5)


async def test_requests_without_the_key_are_refused(torchserve: TorchServeStack) -> None:
    """TorchServe 0.12 refuses a missing or wrong key with 400 InvalidKeyException (not 401)."""
    async with aiohttp.ClientSession(torchserve.server.inference_url) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with anonymous.post("/predictions/tab", json=[1, 2, 3, 4], headers=headers) as r:
                assert r.status in (400, 401)
                assert (await r.json())["type"] == "InvalidKeyException"
            async with anonymous.get("/ping", headers=headers) as r:
                assert r.status in (400, 401)


async def test_model_registration_is_off(torchserve: TorchServeStack) -> None:
    headers = {"Authorization": f"Bearer {torchserve.server.management_token}"}
    async with aiohttp.ClientSession(torchserve.server.management_url, headers=headers) as http:
        async with http.post("/models", params={"url": "tab.mar", "model_name": "x"}) as r:
            assert r.status >= 400
        async with http.get("/models/tab") as r:
            assert r.status == 200
            assert (await r.json())[0]["workers"][0]["status"] == "READY"


async def test_metrics_port_serves_prometheus(
    torchserve: TorchServeStack, http: aiohttp.ClientSession
) -> None:
    assert (await post(http, "tab", as_json([1, 2, 3, 4]), "application/json")).status == 200
    async with (
        aiohttp.ClientSession() as plain,
        plain.get(f"{torchserve.server.metrics_url}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    requests = families["ts_inference_requests"]
    served = {sample.labels["model_name"]: sample.value for sample in requests.samples}
    assert served["tab"] >= 1
    assert "ts_inference_latency_microseconds" in families


async def test_forecaster_series_in_every_shape(
    torchserve: TorchServeStack, http: aiohttp.ClientSession
) -> None:
    """`{"series": [...]}` answered `{"forecast": [...]}` exactly as the gateway's processor and
    ONNX Runtime answer it; a batch of series; a wrong length or NaN gets its own 400."""
    fc = torchserve.reference("fc")
    series = [[1.0, 2.0, 3.0, 4.0, 5.5], [0.5, 0.25, 0.0, -1.0, 2.0]]
    answers = await asyncio.gather(
        post(http, "fc", as_json({"series": series[0]}), "application/json"),
        post(http, "fc", as_json({"series": series[1]}), "application/json"),
        post(http, "fc", as_json({"instances": series}), "application/json"),
        post(http, "fc", as_json({"series": series[0][:4]}), "application/json"),
        post(http, "fc", b'{"series": [1, 2, NaN, 4, 5]}', "application/json"),
    )
    assert [answer.status for answer in answers] == [200, 200, 200, 400, 400]
    for answer, row in zip(answers[:2], series, strict=True):
        expected = fc.predictions(fc.processor.feed_from_instances([row]))[0]
        assert set(answer.json()) == {"forecast"}
        assert_answers_close(answer.json(), expected)
    assert_answers_close(
        answers[2].json(), fc.predictions(fc.processor.feed_from_instances(series))
    )
    assert "exactly 5 values" in answers[3].json()["message"]
    assert "NaN" in answers[4].json()["message"]
