"""The in-process driver: real app, real lifespan, every request checked."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests import inprocess
from loadtests.drive.wrk import Request
from service.app import create_app
from service.settings import Settings
from tests.tiny_models import full_store


@pytest.fixture(autouse=True)
def restored_gc() -> Iterator[None]:
    """`measure` settles the collector as the server does (a frozen heap, a higher threshold):
    give the rest of the test session its collector back."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return full_store(tmp_path_factory.mktemp("store"))


@pytest.mark.parametrize(("model", "protocol"), [("tab", "rest"), ("img", "predictions")])
async def test_requests_are_answered_and_their_cpu_counted(
    store: Path, model: str, protocol: str
) -> None:
    figures = await inprocess.measure(
        store, model, protocol, concurrency=4, requests=60, warmup=8, native=False
    )
    assert figures.requests == 60
    assert figures.gateway_cpu_s > 0 and figures.gateway_us > 0
    assert figures.children_cpu_s >= 0


async def test_a_failed_request_stops_the_run(store: Path) -> None:
    app = create_app(Settings(model_store=store, models=["tab"], grpc_enabled=False))
    broken = Request("/v2/models/tab/infer", b"{not json", {"Content-Type": "application/json"})
    async with inprocess.Lifespan(app):
        await inprocess.wait_ready(app.state.dataplane, "tab")
        with pytest.raises(RuntimeError, match="answered 400"):
            await inprocess.drive(app, broken, concurrency=2, requests=4)
