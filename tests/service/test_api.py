"""The HTTP API in-process: every protocol, errors as JSON, metrics after traffic."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import orjson
import pytest
from PIL import Image

from service.app import create_app
from service.settings import Settings
from tests.conftest import wait_ready
from tests.tiny_models import WORDS, embedding_table, image_weights, tabular_weights


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def expected_tab(x: np.ndarray) -> np.ndarray:
    weight, bias = tabular_weights(4, 3)
    return softmax(x @ weight + bias)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


async def test_health_and_server_metadata(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).status_code == 200
    assert (await client.get("/ping")).json() == {"status": "Healthy"}
    meta = (await client.get("/v2")).json()
    assert "binary_tensor_data" in meta["extensions"]


async def test_model_metadata_and_readiness(client: httpx.AsyncClient) -> None:
    meta = (await client.get("/v2/models/tab")).json()
    assert meta["name"] == "tab"
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    text_meta = (await client.get("/v2/models/txt/versions/1")).json()
    assert text_meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert (await client.get("/v2/models/tab/ready")).json()["ready"] is True


async def test_v2_json_infer_matches_numpy(client: httpx.AsyncClient) -> None:
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    body = {
        "id": "req-1",
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [2, 4], "data": x.ravel().tolist()}
        ],
    }
    response = await client.post("/v2/models/tab/infer", content=orjson.dumps(body))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["id"] == "req-1"
    assert result["model_version"] == "1"
    output = result["outputs"][0]
    assert output["name"] == "probabilities"
    assert output["shape"] == [2, 3]
    np.testing.assert_allclose(np.reshape(output["data"], (2, 3)), expected_tab(x), atol=1e-6)


async def test_v2_binary_request_and_response(client: httpx.AsyncClient) -> None:
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [3, 4],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    )
    response = await client.post(
        "/v2/models/tab/infer",
        content=header + x.tobytes(),
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    meta = orjson.loads(response.content[:length])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 3 * 3 * 4
    result = np.frombuffer(response.content[length:], dtype=np.float32).reshape(3, 3)
    np.testing.assert_allclose(result, expected_tab(x), atol=1e-6)


async def test_v2_text_bytes_tensor(client: httpx.AsyncClient) -> None:
    body = {
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [2],
                "data": ["hello world", "fast batch serving models"],
            }
        ]
    }
    response = await client.post("/v2/models/txt/infer", json=body)
    assert response.status_code == 200, response.text
    data = np.reshape(response.json()["outputs"][0]["data"], (2, 6))
    table = embedding_table(6)
    first = table[[WORDS.index("hello"), WORDS.index("world")]].mean(axis=0)
    np.testing.assert_allclose(data[0], first / np.linalg.norm(first), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(data, axis=1), 1.0, atol=1e-5)


async def test_v2_image_uint8_and_encoded_bytes_agree(client: httpx.AsyncClient) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, size=(8, 8), dtype=np.uint8)
    raw = {
        "inputs": [
            {
                "name": "images",
                "datatype": "UINT8",
                "shape": [1, 1, 8, 8],
                "data": pixels.ravel().tolist(),
            }
        ]
    }
    encoded = {
        "inputs": [
            {
                "name": "images",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(png(pixels)).decode()],
            }
        ]
    }
    first = (await client.post("/v2/models/img/infer", json=raw)).json()
    second = (await client.post("/v2/models/img/infer", json=encoded)).json()
    expected = softmax(pixels.reshape(1, 64).astype(np.float32) @ image_weights(64, 10))
    np.testing.assert_allclose(first["outputs"][0]["data"], expected[0], atol=1e-5)
    np.testing.assert_allclose(second["outputs"][0]["data"], expected[0], atol=1e-5)


async def test_predictions_image_upload_raw_and_multipart(client: httpx.AsyncClient) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, size=(8, 8), dtype=np.uint8)
    expected = softmax(pixels.reshape(1, 64).astype(np.float32) @ image_weights(64, 10))[0]
    raw = await client.post(
        "/predictions/img", content=png(pixels), headers={"Content-Type": "image/png"}
    )
    assert raw.status_code == 200, raw.text
    top = raw.json()
    assert len(top) == 5
    best = str(int(np.argmax(expected)))
    assert next(iter(top)) == best
    assert top[best] == pytest.approx(float(expected.max()), abs=1e-5)
    multipart = await client.post("/predictions/img/1", files={"data": ("x.png", png(pixels))})
    assert multipart.json() == top


async def test_predictions_json_tabular_and_text(client: httpx.AsyncClient) -> None:
    features = {"f0": 5.1, "f1": 3.5, "f2": 1.4, "f3": 0.2}
    single = (await client.post("/predictions/tab", json=features)).json()
    assert set(single) == {"class_0", "class_1", "class_2"}
    batch = (await client.post("/predictions/tab", json=[[5.1, 3.5, 1.4, 0.2]] * 2)).json()
    assert batch == [single, single]
    regression = (await client.post("/predictions/reg", json=[1.0, 1.0, 1.0])).json()
    assert regression == pytest.approx(6.0)
    text = await client.post(
        "/predictions/txt", content=b"hello world", headers={"Content-Type": "text/plain"}
    )
    assert len(text.json()) == 6


async def test_kserve_v1_predict(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/models/reg:predict", json={"instances": [[1, 0, 0], [0, 0, 1]]}
    )
    assert response.json() == {"predictions": [[1.0], [3.0]]}
    assert (await client.get("/v1/models/reg")).json() == {"name": "reg", "ready": True}


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v2/models/tab/infer", b"{not json", 400),
        ("/v2/models/tab/infer", b'{"inputs": []}', 400),
        (
            "/v2/models/tab/infer",
            orjson.dumps(
                {
                    "inputs": [
                        {"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}
                    ]
                }
            ),
            400,
        ),
        (
            "/v2/models/tab/infer",
            orjson.dumps(
                {
                    "inputs": [
                        {
                            "name": "features",
                            "datatype": "INT64",
                            "shape": [1, 4],
                            "data": [1, 2, 3, 4],
                        }
                    ]
                }
            ),
            400,
        ),
        (
            "/v2/models/tab/infer",
            orjson.dumps(
                {
                    "inputs": [
                        {"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3]}
                    ]
                }
            ),
            400,
        ),
        (
            "/v2/models/tab/infer",
            orjson.dumps(
                {
                    "inputs": [
                        {
                            "name": "features",
                            "datatype": "FP32",
                            "shape": [100000, 100000, 100],
                            "data": [],
                        }
                    ]
                }
            ),
            400,
        ),
        (
            "/v2/models/nope/infer",
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            404,
        ),
        (
            "/v2/models/tab/versions/9/infer",
            b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1,2,3,4]}]}',
            404,
        ),
        ("/predictions/img", b"\x89PNG\r\n\x1a\nbroken", 400),
        ("/predictions/txt", b"\xff\xfe\xfa", 400),
        ("/predictions/..%2F..%2Fetc", b"{}", 404),
    ],
)
async def test_bad_input_gets_json_error(
    client: httpx.AsyncClient, path: str, body: bytes, status: int
) -> None:
    response = await client.post(path, content=body)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert (await client.get("/v2/health/ready")).status_code == 200


async def test_nan_rejected(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/predictions/tab", content=b"[NaN, 1, 2, 3]", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    )
    body = header + np.array([np.nan, 1, 2, 3], dtype=np.float32).tobytes()
    response = await client.post(
        "/v2/models/tab/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert "NaN" in response.json()["error"]


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nowhere")
    assert missing.status_code == 404
    assert "error" in missing.json()
    wrong = await client.get("/v2/models/tab/infer")
    assert wrong.status_code == 405
    assert "error" in wrong.json()


async def test_metrics_after_traffic(client: httpx.AsyncClient) -> None:
    body = {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]
    }
    for _ in range(3):
        assert (await client.post("/v2/models/tab/infer", json=body)).status_code == 200
    await client.post("/v2/models/tab/infer", content=b"nope")
    text = (await client.get("/metrics")).text
    assert 'gateway_requests_total{code="200",model="tab",protocol="v2",version="1"} 3.0' in text
    assert 'gateway_requests_total{code="400",model="tab",protocol="v2",version="1"} 1.0' in text
    assert 'gateway_batch_size_count{model="tab",version="1"} 3.0' in text
    assert 'gateway_model_ready{model="img",version="1"} 1.0' in text
    assert "gateway_queue_duration_seconds_bucket" in text
    assert "gateway_compute_duration_seconds_bucket" in text


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/no-such-model/infer",
        "/v2/models/tab/versions/9/infer",
        "/predictions/no-such-model",
        "/v1/models/no-such-model:predict",
    ],
)
@pytest.mark.parametrize("body", [b"{}", b"", b"not json at all"])
async def test_unknown_model_is_404_whatever_the_body(
    client: httpx.AsyncClient, path: str, body: bytes
) -> None:
    response = await client.post(path, content=body)
    assert response.status_code == 404, response.text
    assert set(response.json()) == {"error"}


async def test_large_uploads_are_decoded_off_the_event_loop_small_ones_and_tensors_on_it(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offload policy is the processor's: an encoded image declaring many pixels goes to a
    thread; a small one, and pixels, do not (the hop would cost more than the decode)."""
    import threading

    from service.processing import IMAGE_INLINE_PIXELS, FeedPlan, ImageProcessor, ModelInputs

    threads: list[str] = []
    original = ImageProcessor.plan

    def plan(self: ImageProcessor, inputs: ModelInputs) -> FeedPlan:
        planned = original(self, inputs)

        def run() -> object:
            threads.append(threading.current_thread().name)
            return planned.run()

        return FeedPlan(run, planned.heavy)  # type: ignore[arg-type]

    monkeypatch.setattr(ImageProcessor, "plan", plan)
    rng = np.random.default_rng(3)
    side = int(IMAGE_INLINE_PIXELS**0.5) + 1
    large = rng.integers(0, 255, size=(side, side), dtype=np.uint8)
    pixels = rng.integers(0, 255, size=(8, 8), dtype=np.uint8)
    for body in (png(large), png(pixels)):
        upload = await client.post("/predictions/img", content=body)
        assert upload.status_code == 200, upload.text
    tensor = {
        "inputs": [
            {"name": "images", "datatype": "UINT8", "shape": [1, 1, 8, 8], "data": pixels.tolist()}
        ]
    }
    direct = await client.post("/v2/models/img/infer", json=tensor)
    assert direct.status_code == 200, direct.text
    main = threading.main_thread().name
    assert threads[0] != main
    assert threads[1:] == [main, main]


async def test_a_model_asked_for_before_the_start_up_models_load_is_503_then_served(
    settings: Settings,
) -> None:
    """With several workers, one may take requests while another still loads: a model it
    has not loaded yet is on its way (503, as its readiness says), not unknown (404)."""
    app = create_app(settings)
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        early = await http.post("/v2/models/tab/infer", json=body)  # the lifespan has not run
        assert early.status_code == 503, early.text
        assert early.json() == {
            "error": "model 'tab' is not available yet: the gateway is still loading its models"
        }
        assert early.headers["retry-after"] == "1"
        async with app.router.lifespan_context(app):
            await wait_ready(app)
            assert (await http.post("/v2/models/tab/infer", json=body)).status_code == 200
            unknown = await http.post("/v2/models/nothing/infer", json=body)
            assert unknown.status_code == 404, unknown.text
