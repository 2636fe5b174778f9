"""An in-process gateway with its gRPC server on a free port, and stock tritonclient.grpc.aio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc.aio as grpcclient
from fastapi import FastAPI

from service.app import create_app
from service.grpc.server import GrpcServer
from service.settings import Settings
from tests.conftest import wait_ready
from tests.servers import free_port


@dataclass
class Served:
    app: FastAPI
    http: httpx.AsyncClient
    grpc: grpcclient.InferenceServerClient
    address: str


async def serve(settings: Settings) -> AsyncIterator[Served]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await wait_ready(app)
        server = GrpcServer(app.state.dataplane)
        port = await server.start()
        address = f"127.0.0.1:{port}"
        client = grpcclient.InferenceServerClient(address)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
                yield Served(app, http, client, address)
        finally:
            await client.close()
            await server.stop(0)


def grpc_settings(store: Path, **overrides: object) -> Settings:
    return Settings(  # type: ignore[call-arg]
        model_store=store, grpc_port=free_port(), _env_file=None, **overrides
    )


@pytest.fixture
async def served(store: Path) -> AsyncIterator[Served]:
    async for item in serve(grpc_settings(store)):
        yield item
