"""The gRPC server in a real gateway process: SIGTERM drains it like HTTP, and the README's
grpcurl example works through server reflection."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcaio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.servers import gateway, sample_total
from tests.tiny_models import slow_model

pytestmark = pytest.mark.integration


def slow_input() -> list[grpcaio.InferInput]:
    item = grpcaio.InferInput("features", [1, 1024], "FP32")
    item.set_data_from_numpy(np.full((1, 1024), 0.5, np.float32))
    return [item]


async def test_sigterm_drains_grpc(tmp_path: Path) -> None:
    store = tmp_path / "store"
    slow_model(store)
    with gateway(store, tmp_path, env={"GATEWAY_DRAIN_SECONDS": "30"}) as server:
        client = grpcaio.InferenceServerClient(server.grpc_address)
        channel = grpc.aio.insecure_channel(server.grpc_address)
        health = health_pb2_grpc.HealthStub(channel)
        try:
            ready = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert ready.status == health_pb2.HealthCheckResponse.SERVING
            sent = [asyncio.create_task(client.infer("slow", slow_input())) for _ in range(48)]
            deadline = time.monotonic() + 20
            held = 0.0
            async with httpx.AsyncClient(base_url=server.url) as http:
                while time.monotonic() < deadline and held < 32:
                    metrics = (await http.get("/metrics")).text
                    held = sample_total(metrics, "gateway_inflight_requests")
                    await asyncio.sleep(0.01)
            assert held >= 32
            server.process.send_signal(signal.SIGTERM)
            flipped = time.monotonic()
            while True:
                status = await health.Check(health_pb2.HealthCheckRequest(service=""))
                if status.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                assert time.monotonic() - flipped < 1.0, "gRPC health did not flip within 1 s"
                await asyncio.sleep(0.005)
            assert not await client.is_server_ready()
            with pytest.raises(InferenceServerException) as late:
                await client.infer("slow", slow_input())
            assert str(late.value.status()) == "StatusCode.UNAVAILABLE"
            outcomes = await asyncio.gather(*sent, return_exceptions=True)
            answered = [o for o in outcomes if not isinstance(o, BaseException)]
            refused = [o for o in outcomes if isinstance(o, InferenceServerException)]
            # Every call the server held at the signal is answered; one that had not reached
            # it yet may be refused UNAVAILABLE, as a new call is.
            assert len(answered) >= held
            assert len(answered) + len(refused) == len(sent)
            assert all(str(o.status()) == "StatusCode.UNAVAILABLE" for o in refused)
            assert all(a.as_numpy("prediction").shape == (1, 1) for a in answered)
        finally:
            await client.close()
            await channel.close()
        assert server.process.wait(timeout=30) == 0


async def test_cancelled_calls_leave_the_queue_uncomputed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    slow_model(store)
    with gateway(store, tmp_path) as server:
        client = grpcaio.InferenceServerClient(server.grpc_address)
        try:
            kept = [asyncio.create_task(client.infer("slow", slow_input())) for _ in range(16)]
            abandoned = [asyncio.create_task(client.infer("slow", slow_input())) for _ in range(32)]
            async with httpx.AsyncClient(base_url=server.url) as http:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    metrics = (await http.get("/metrics")).text
                    if sample_total(metrics, "gateway_queue_depth", model="slow") >= 24:
                        break
                    await asyncio.sleep(0.005)
                for task in abandoned:
                    task.cancel()
                outcomes = await asyncio.gather(*abandoned, return_exceptions=True)
                # Each was cancelled, or had been answered before the cancel reached it.
                assert all(
                    isinstance(o, asyncio.CancelledError) or o.as_numpy("prediction") is not None
                    for o in outcomes
                )
                answers = await asyncio.gather(*kept)
                assert all(a.as_numpy("prediction").shape == (1, 1) for a in answers)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    metrics = (await http.get("/metrics")).text
                    if sample_total(metrics, "gateway_queue_depth", model="slow") == 0:
                        break
                    await asyncio.sleep(0.01)
        finally:
            await client.close()
    labels = {"model": "slow", "version": "1", "protocol": "grpc"}
    cancelled = sample_total(metrics, "gateway_requests_total", code="499", **labels)
    computed = sample_total(metrics, "gateway_batch_size_count", model="slow")
    assert cancelled >= 16  # the queue held at least 24, so most abandoned calls were queued
    assert computed <= 16 + 32 - cancelled + 2  # one being computed may finish anyway
    assert sample_total(metrics, "gateway_queue_depth", model="slow") == 0
