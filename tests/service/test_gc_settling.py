"""Once the models are loaded the server settles the cyclic collector: the start-up heap frozen,
the youngest generation collected less often; once only, and not before the models load."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import uvicorn

from service.server import GC_YOUNG_THRESHOLD, DrainingServer


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


async def _app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("not called")


async def test_settles_once_the_models_are_loaded(restored_gc: None) -> None:
    plane = SimpleNamespace(started=False, draining=False)
    server = DrainingServer(uvicorn.Config(_app), plane, drain_seconds=1.0)  # type: ignore[arg-type]
    default = gc.get_threshold()[0]
    assert default != GC_YOUNG_THRESHOLD
    await server.on_tick(1)
    assert gc.get_threshold()[0] == default and gc.get_freeze_count() == 0  # still loading

    plane.started = True
    await server.on_tick(2)
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    frozen = gc.get_freeze_count()
    assert frozen > 0

    kept = [[] for _ in range(100)]
    await server.on_tick(3)
    # Once only: a second freeze would take in `kept` too; frozen objects may still be freed.
    assert gc.get_freeze_count() <= frozen
    assert len(kept) == 100
