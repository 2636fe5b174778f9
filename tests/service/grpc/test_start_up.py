"""Before the start-up models have loaded, a model not loaded yet is UNAVAILABLE over gRPC with
the message HTTP gives with its 503 (one rule, `DataPlane`); once loaded, it is served."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from service.app import create_app
from service.grpc.server import GrpcServer
from tests.conftest import wait_ready
from tests.service.grpc.conftest import grpc_settings

BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}


def tab_input() -> list[grpcclient.InferInput]:
    features = grpcclient.InferInput("features", [1, 4], "FP32")
    features.set_data_from_numpy(np.ones((1, 4), np.float32))
    return [features]


async def test_a_model_not_loaded_yet_is_unavailable_with_http_s_message(store: Path) -> None:
    app = create_app(grpc_settings(store))
    server = GrpcServer(app.state.dataplane)  # serving before the lifespan loads anything
    address = f"127.0.0.1:{await server.start()}"
    client = grpcclient.InferenceServerClient(address)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            answer = await http.post("/v2/models/tab/infer", json=BODY)
            with pytest.raises(InferenceServerException) as refused:
                await client.infer("tab", tab_input())
            assert refused.value.status() == str(grpc.StatusCode.UNAVAILABLE)
            assert refused.value.message() == answer.json()["error"]
            assert answer.status_code == 503
            async with app.router.lifespan_context(app):
                await wait_ready(app)
                result = await client.infer("tab", tab_input())
                assert result.as_numpy("probabilities").shape == (1, 3)
    finally:
        await client.close()
        await server.stop(0)
