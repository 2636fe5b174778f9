"""The repository's health probe: remote backends that go away flip their versions' readiness."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from service.backends.base import Backend
from service.feeds import Feed, rows_of
from service.manifest import Manifest
from service.metrics import GatewayMetrics
from service.models import manifests
from service.models.store import repository_for
from service.repository import BACKEND_DOWN, State
from service.settings import Settings
from tests import tiny_models


class SwitchableBackend(Backend):
    name = "switchable"

    def __init__(self, manifest: Manifest) -> None:
        super().__init__(manifest)
        self.up = True
        self.probed = asyncio.Event()

    async def load(self) -> None:
        pass

    async def infer(self, feed: Feed) -> Feed:
        rows = rows_of(feed)
        return {
            spec.name: np.zeros((rows, spec.shape[1]), np.float32)
            for spec in self.signature.outputs
        }

    async def healthy(self) -> bool:
        self.probed.set()
        return self.up

    async def switch(self, up: bool) -> None:
        """Change health and wait until the probe has seen it (it acts before yielding)."""
        self.up = up
        self.probed.clear()
        await asyncio.wait_for(self.probed.wait(), timeout=5)


async def test_readiness_follows_backend_health(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_models.regressor(tmp_path)
    backends: list[SwitchableBackend] = []

    def build(manifest: Manifest, _path: Path, _settings: Settings) -> Backend:
        backends.append(SwitchableBackend(manifest))
        return backends[-1]

    monkeypatch.setattr(manifests, "build_backend", build)
    settings = Settings(model_store=tmp_path, backend_probe_interval_s=0.02, _env_file=None)  # type: ignore[call-arg]
    metrics = GatewayMetrics()
    models = repository_for(settings, metrics)
    await models.load_all()

    def gauge() -> float | None:
        labels = {"model": "reg", "version": "1"}
        return metrics.registry.get_sample_value("gateway_model_ready", labels)

    try:
        version = models.get("reg")
        assert version.ready
        await backends[0].switch(up=False)
        assert version.state is State.UNAVAILABLE
        assert version.reason == BACKEND_DOWN
        assert gauge() == 0
        await backends[0].switch(up=True)
        assert version.ready
        assert gauge() == 1
    finally:
        await models.close()


async def test_versions_that_failed_to_load_are_not_revived(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_models.regressor(tmp_path)
    tiny_models.classifier(tmp_path)
    healthy: list[SwitchableBackend] = []

    class Broken(SwitchableBackend):
        async def load(self) -> None:
            raise RuntimeError("corrupt artifact")

    def build(manifest: Manifest, _path: Path, _settings: Settings) -> Backend:
        if manifest.name == "reg":
            return Broken(manifest)
        healthy.append(SwitchableBackend(manifest))
        return healthy[-1]

    monkeypatch.setattr(manifests, "build_backend", build)
    settings = Settings(model_store=tmp_path, backend_probe_interval_s=0.02, _env_file=None)  # type: ignore[call-arg]
    models = repository_for(settings, GatewayMetrics())
    await models.load_all()
    try:
        for _cycle in range(2):  # two probe rounds over every version
            await healthy[0].switch(up=True)
        version = models.get("reg")
        assert version.state is State.UNAVAILABLE
        assert "corrupt artifact" in version.reason
    finally:
        await models.close()
