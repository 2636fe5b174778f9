"""`service.grpc.admission` in a real gRPC server: calls past `grpc_max_concurrent_calls` are
answered UNAVAILABLE with a retry hint and counted; health checks are exempt; a place frees
when a call ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service.grpc.admission import Admission
from tests.servers import sample_total
from tests.service.grpc.conftest import grpc_settings, serve


def iris_request(request_id: str) -> pb.ModelInferRequest:
    rows = np.ones((1, 4), np.float32)
    return pb.ModelInferRequest(
        model_name="tab",
        id=request_id,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=[1, 4])
        ],
        raw_input_contents=[rows.tobytes()],
    )


class HeldStream:
    """A ModelStreamInfer stream kept open: one request answered, then nothing until `end`."""

    def __init__(self, stub: pb_grpc.GRPCInferenceServiceStub, name: str) -> None:
        self._end = asyncio.Event()
        self.name = name
        self.call = stub.ModelStreamInfer(self._requests())

    async def _requests(self) -> AsyncIterator[pb.ModelInferRequest]:
        yield iris_request(self.name)
        await self._end.wait()

    async def started(self) -> None:
        answer = await self.call.read()
        assert answer.infer_response.id == self.name, answer.error_message

    async def end(self) -> None:
        self._end.set()
        assert await self.call.read() == grpc.aio.EOF
        assert await self.call.code() == grpc.StatusCode.OK


async def test_calls_past_the_limit_are_unavailable_with_a_retry_hint(store: Path) -> None:
    settings = grpc_settings(store, grpc_max_concurrent_calls=2, grpc_retry_pushback_ms=250)
    async for served in serve(settings):
        async with grpc.aio.insecure_channel(served.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            held = [HeldStream(stub, "first"), HeldStream(stub, "second")]
            for stream in held:
                await stream.started()

            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ModelInfer(iris_request("third"))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "the limit is 2" in (refused.value.details() or "")
            assert ("grpc-retry-pushback-ms", "250") in tuple(
                refused.value.trailing_metadata() or ()
            )
            health = health_pb2_grpc.HealthStub(channel)
            checked = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert checked.status == health_pb2.HealthCheckResponse.SERVING

            await held[0].end()
            answer = await stub.ModelInfer(iris_request("fourth"))
            assert answer.id == "fourth"
            await held[1].end()

        metrics = served.app.state.dataplane.metrics.render()[0].decode()
        assert (
            sample_total(
                metrics,
                "gateway_grpc_calls_refused_total",
                method="/inference.GRPCInferenceService/ModelInfer",
            )
            == 1
        )


def test_the_limit_must_allow_a_call() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Admission(0, pushback_ms=0, refused=lambda method: None)
