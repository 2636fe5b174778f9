"""Security defaults: loopback bind, CORS off, tokens never logged, no stack traces, no pickle."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.app import create_app
from service.settings import Settings
from tests.conftest import wait_ready
from tests.servers import gateway
from tests.tiny_models import OPSET, classifier, full_store

ROOT = Path(__file__).resolve().parents[2]


def test_default_bind_is_loopback_and_apis_are_closed() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.host == "127.0.0.1"
    assert settings.management_token is None
    assert settings.cors_origins == []


async def test_cors_is_off_unless_configured(tmp_path: Path) -> None:
    store = full_store(tmp_path / "store")
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    for origins, allowed in (([], False), (["https://evil.example"], True)):
        app = create_app(Settings(model_store=store, cors_origins=origins, _env_file=None))  # type: ignore[call-arg]
        async with app.router.lifespan_context(app):
            await wait_ready(app)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway"
            ) as client:
                response = await client.options("/v2/models/tab/infer", headers=preflight)
                assert ("access-control-allow-origin" in response.headers) is allowed


def failing_model(store: Path) -> None:
    """Indexes a table with the first feature: out-of-range values fail inside ONNX Runtime."""
    directory = classifier(store, name="fragile")
    graph = helper.make_graph(
        [
            helper.make_node("Slice", ["features", "start", "end", "axis"], ["first"]),
            helper.make_node("Cast", ["first"], ["index"], to=TensorProto.INT64),
            helper.make_node("Squeeze", ["index", "axis"], ["flat"]),
            helper.make_node("Gather", ["table", "flat"], ["probabilities"]),
        ],
        "fragile",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        [
            numpy_helper.from_array(np.eye(3, dtype=np.float32), "table"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "start"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "end"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"),
        ],
    )
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    (directory / "model.onnx").write_bytes(model.SerializeToString())


@pytest.mark.integration
def test_tokens_never_logged_and_errors_carry_no_stack_trace(tmp_path: Path) -> None:
    store = tmp_path / "store"
    failing_model(store)
    secret, manage = "s3cret-inference-token", "s3cret-management-token"
    env = {
        "GATEWAY_INFERENCE_TOKEN": secret,
        "GATEWAY_MANAGEMENT_TOKEN": manage,
        "GATEWAY_LOG_REQUESTS": "true",
        "GATEWAY_LOG_LEVEL": "debug",
    }
    body = {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [99, 0, 0, 0]}]
    }
    with gateway(store, tmp_path, env=env) as server:
        auth = {"Authorization": f"Bearer {secret}"}
        url = f"{server.url}/v2/models/fragile/infer"
        broken = httpx.post(url, json=body, headers=auth)
        assert broken.status_code == 500
        assert set(broken.json()) == {"error"}
        assert "Traceback" not in broken.text
        assert not re.search(r'File ".*", line \d+', broken.text)
        fine = {**body, "inputs": [{**body["inputs"][0], "data": [1, 0, 0, 0]}]}
        assert httpx.post(url, json=fine, headers=auth).status_code == 200
        assert (
            httpx.post(url, json=fine, headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        assert (
            httpx.post(url, json=fine, headers={"Authorization": f"Bearer {manage}"}).status_code
            == 403
        )
        assert (
            httpx.post(
                f"{server.url}/v2/repository/index", headers={"Authorization": f"Bearer {manage}"}
            ).status_code
            == 200
        )
        log = server.output()
    assert '"logger":"service.requests"' in log  # request logs were on
    assert '"status":500' in log
    assert secret not in log
    assert manage not in log


def test_no_pickle_loading_anywhere() -> None:
    """torch.load only with weights_only=True; no pickle/joblib loads in the code base."""
    offenders = []
    for path in [
        *ROOT.glob("service/**/*.py"),
        *ROOT.glob("training/**/*.py"),
        *ROOT.glob("handlers/**/*.py"),
    ]:
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in match.group(1):
                offenders.append(f"{path}: {match.group(0)}")
        if re.search(r"\bpickle\.loads?\(|\bjoblib\.load\(", text):
            offenders.append(f"{path}: pickle/joblib load")
    assert not offenders
