"""Shared fixtures: tiny model stores, in-process apps, and real gateway processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.settings import Settings
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
