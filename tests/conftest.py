"""Shared fixtures: tiny model stores, in-process apps, and real gateway processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.settings import Settings
from tests.servers import GatewayProcess, gateway
from tests.tiny_models import full_store


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return full_store(tmp_path / "store")


async def wait_ready(app: FastAPI) -> None:
    await asyncio.wait_for(app.state.loading, timeout=30)


@pytest.fixture
def settings(store: Path) -> Settings:
    return Settings(model_store=store, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        await wait_ready(application)
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


@pytest.fixture(scope="session")
def default_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every default model, trained small once per session."""
    from tests.defaults import train_defaults

    return train_defaults(tmp_path_factory.mktemp("defaults") / "store")


@pytest.fixture(scope="session")
def default_gateway(default_store: Path) -> Iterator[GatewayProcess]:
    """A gateway process serving `default_store`, for the tests that run what a user of
    `make run` runs (README examples, stock clients)."""
    with gateway(default_store, default_store.parent, timeout_s=180) as server:
        yield server
