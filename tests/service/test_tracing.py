"""Traces that understand batches: span trees from the SDK's in-memory exporter, the caller's
trace continued over HTTP and gRPC, exemplars, a real OTLP/HTTP export, and tracing off."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loadtests.systems.otlp_sink import OtlpSink
from service.app import create_app
from service.grpc.server import GrpcServer
from service.settings import Settings
from service.tracing import Tracing
from tests.conftest import wait_ready
from tests.servers import free_port, gateway
from tests.tiny_models import classifier

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
ROW = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@dataclass
class Traced:
    app: FastAPI
    http: httpx.AsyncClient
    spans: InMemorySpanExporter

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())


@pytest.fixture
def store(tmp_path: Path) -> Path:
    classifier(tmp_path / "store")
    return tmp_path / "store"


async def traced_app(settings: Settings) -> AsyncIterator[Traced]:
    exporter = InMemorySpanExporter()
    tracing = Tracing(settings, processor=SimpleSpanProcessor(exporter))
    app = create_app(settings, tracing=tracing)
    async with app.router.lifespan_context(app):
        await wait_ready(app)
        exporter.clear()  # warm-up happened before any request
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield Traced(app, http, exporter)


@pytest.fixture
async def traced(store: Path) -> AsyncIterator[Traced]:
    settings = Settings(model_store=store, log_requests=True, _env_file=None)  # type: ignore[call-arg]
    async for item in traced_app(settings):
        yield item


def by_name(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> set[str]:
    return {
        span.name
        for span in spans
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    }


async def test_one_request_continues_the_callers_trace(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="service.requests"):
        response = await traced.http.post(
            "/v2/models/tab/infer", json=ROW, headers={"traceparent": TRACEPARENT}
        )
    assert response.status_code == 200
    spans = traced.finished()
    (request,) = by_name(spans, "infer tab")
    assert format(request.context.trace_id, "032x") == TRACE_ID
    assert request.parent is not None and format(request.parent.span_id, "016x") == PARENT_ID
    assert request.attributes is not None
    assert request.attributes["gateway.protocol"] == "v2"
    assert request.attributes["gateway.model_version"] == "1"
    assert request.attributes["gateway.rows"] == 1
    assert request.attributes["gateway.status_code"] == 200
    assert children(spans, request) == {"decode", "queue", "encode", "batch"}
    (batch,) = by_name(spans, "batch")
    assert [link.context.span_id for link in batch.links] == [request.context.span_id]
    assert [link.context.span_id for link in request.links] == [batch.context.span_id]
    assert batch.attributes is not None and batch.attributes["gateway.batch_rows"] == 1
    assert batch.attributes["gateway.backend_ms"] > 0
    (queue,) = by_name(spans, "queue")
    assert queue.end_time is not None and batch.start_time is not None
    assert queue.end_time <= batch.start_time + 1_000  # ns: the wait ends as the batch starts
    (line,) = [r for r in caplog.records if r.getMessage() == "request"]
    assert line.trace_id == TRACE_ID  # type: ignore[attr-defined]


async def test_a_batch_links_every_request_it_served(store: Path) -> None:
    concurrent = 5
    settings = Settings(  # type: ignore[call-arg]
        model_store=store,
        max_batch_size=concurrent,
        max_queue_delay_ms=5_000,  # the batch closes when all five are queued, not on time
        _env_file=None,
    )
    async for traced in traced_app(settings):
        answers = await asyncio.gather(
            *(traced.http.post("/v2/models/tab/infer", json=ROW) for _ in range(concurrent))
        )
        assert [a.status_code for a in answers] == [200] * concurrent
        spans = traced.finished()
        requests = by_name(spans, "infer tab")
        (batch,) = by_name(spans, "batch")
        assert len(requests) == concurrent
        assert len({span.context.trace_id for span in requests}) == concurrent  # new traces
        served = {link.context.span_id for link in batch.links}
        assert served == {span.context.span_id for span in requests}
        for span in requests:
            assert [link.context.span_id for link in span.links] == [batch.context.span_id]
            assert children(spans, span) >= {"decode", "queue", "encode"}
        assert batch.parent is not None
        assert batch.parent.span_id in served  # a child of one of the requests it served
        assert batch.attributes is not None
        assert batch.attributes["gateway.batch_rows"] == concurrent
        assert batch.attributes["gateway.batch_requests"] == concurrent
        assert len(by_name(spans, "queue")) == concurrent


async def test_errors_are_traced_and_unknown_models_too(traced: Traced) -> None:
    bad = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    assert (await traced.http.post("/v2/models/tab/infer", json=bad)).status_code == 400
    assert (await traced.http.post("/v2/models/nope/infer", json=ROW)).status_code == 404
    spans = traced.finished()
    failed = by_name(spans, "infer tab")[0]
    assert failed.attributes is not None and failed.attributes["gateway.status_code"] == 400
    assert not failed.status.is_ok
    assert "shape" in (failed.status.description or "")
    unknown = by_name(spans, "infer nope")[0]
    assert unknown.attributes is not None and unknown.attributes["gateway.status_code"] == 404
    assert "gateway.model_version" not in unknown.attributes


async def test_grpc_metadata_continues_the_trace(store: Path) -> None:
    settings = Settings(model_store=store, grpc_port=free_port(), _env_file=None)  # type: ignore[call-arg]
    async for traced in traced_app(settings):
        server = GrpcServer(traced.app.state.dataplane)
        port = await server.start()
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            item = grpcclient.InferInput("features", [1, 4], "FP32")
            item.set_data_from_numpy(np.ones((1, 4), np.float32))
            await client.infer("tab", [item], headers={"traceparent": TRACEPARENT})
        finally:
            await client.close()
            await server.stop(0)
        (request,) = by_name(traced.finished(), "infer tab")
        assert format(request.context.trace_id, "032x") == TRACE_ID
        assert request.attributes is not None and request.attributes["gateway.protocol"] == "grpc"


async def test_exemplars_carry_trace_ids_in_openmetrics(traced: Traced) -> None:
    await traced.http.post("/v2/models/tab/infer", json=ROW, headers={"traceparent": TRACEPARENT})
    openmetrics = await traced.http.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    buckets = [
        line
        for line in openmetrics.text.splitlines()
        if line.startswith("gateway_request_duration_seconds_bucket") and "# {" in line
    ]
    assert buckets and all(f'trace_id="{TRACE_ID}"' in line for line in buckets)
    plain = await traced.http.get("/metrics")
    assert plain.headers["content-type"].startswith("text/plain")
    assert "trace_id" not in plain.text


def test_tracing_off_loads_no_sdk_and_starts_no_thread(store: Path) -> None:
    script = f"""
import asyncio, sys, threading
import httpx
from loadtests.systems.otlp_sink import OtlpSink
from service.app import create_app
from service.settings import Settings
async def main():
    app = create_app(Settings(model_store={str(store)!r}, _env_file=None))
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.loading, 30)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://g") as http:
            response = await http.post("/v2/models/tab/infer", json={ROW!r},
                                       headers={{"traceparent": {TRACEPARENT!r}}})
            assert response.status_code == 200
        print(sorted(t.name for t in threading.enumerate()))
        sdk = ("opentelemetry.sdk", "opentelemetry.exporter")
        print(sorted(m for m in sys.modules if m.startswith(sdk)))
asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    threads, modules = done.stdout.strip().splitlines()[-2:]
    assert "Otel" not in threads and "Span" not in threads, threads
    assert modules == "[]"


# -- a real OTLP/HTTP export --------------------------------------------------------------------


@pytest.mark.integration
def test_spans_reach_an_otlp_collector(store: Path, tmp_path: Path) -> None:
    with OtlpSink() as sink:
        env = {
            "GATEWAY_TRACING": "true",
            "GATEWAY_OTLP_ENDPOINT": sink.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_SERVICE_NAME": "gateway-under-test",
        }
        with gateway(store, tmp_path, env=env) as server:
            response = httpx.post(
                f"{server.url}/v2/models/tab/infer", json=ROW, headers={"traceparent": TRACEPARENT}
            )
            assert response.status_code == 200
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                names = {span.name for span in sink.received()}
                if {"infer tab", "batch"} <= names:
                    break
                time.sleep(0.05)
        spans = sink.received()
    assert {"infer tab", "decode", "queue", "batch", "encode"} <= {span.name for span in spans}
    request = next(span for span in spans if span.name == "infer tab")
    batch = next(span for span in spans if span.name == "batch")
    assert request.trace_id == TRACE_ID
    assert request.parent_span_id == PARENT_ID
    assert request.attributes["gateway.model"] == "tab"
    assert request.links == [(batch.trace_id, batch.span_id)]
    assert batch.links == [(request.trace_id, request.span_id)]
    assert {span.service for span in spans} == {"gateway-under-test"}


async def test_unsampled_requests_record_nothing(store: Path) -> None:
    settings = Settings(model_store=store, trace_sample_ratio=0.0, _env_file=None)  # type: ignore[call-arg]
    async for traced in traced_app(settings):
        assert (await traced.http.post("/v2/models/tab/infer", json=ROW)).status_code == 200
        assert traced.finished() == []
        # A caller's sampled trace is still continued (parent-based sampling).
        headers = {"traceparent": TRACEPARENT}
        assert (
            await traced.http.post("/v2/models/tab/infer", json=ROW, headers=headers)
        ).status_code == 200
        names = {span.name for span in traced.finished()}
        assert {"infer tab", "decode", "queue", "batch", "encode"} <= names
