"""TorchScript backend: same answers as the ONNX Runtime backend for the same weights."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from service.app import create_app
from service.manifest import Artifacts, Manifest
from service.settings import Settings
from tests.conftest import wait_ready
from tests.tiny_models import classifier, tabular_weights

torch = pytest.importorskip("torch")


def add_torchscript(version_dir: Path) -> None:
    """Trace a torch module with the tiny classifier's weights next to its ONNX file."""
    weight, bias = tabular_weights(4, 3)

    class Tabular(torch.nn.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)
            with torch.no_grad():
                self.linear.weight.copy_(torch.from_numpy(weight.T.copy()))
                self.linear.bias.copy_(torch.from_numpy(bias))

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.linear(features), dim=-1)

    traced = torch.jit.trace(Tabular().eval(), torch.zeros(2, 4))
    traced.save(str(version_dir / "model.pt"))
    manifest = Manifest.read(version_dir)
    artifacts = Artifacts(onnx="model.onnx", torchscript="model.pt")
    manifest.model_copy(update={"artifacts": artifacts}).write(version_dir)


async def answers(store: Path, backend: str, x: np.ndarray) -> np.ndarray:
    settings = Settings(model_store=store, backend=backend, _env_file=None)  # type: ignore[call-arg]
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await wait_ready(app)
        assert app.state.dataplane.repository.serving("tab").backend.name == backend
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as client:
            body = {
                "inputs": [
                    {
                        "name": "features",
                        "datatype": "FP32",
                        "shape": list(x.shape),
                        "data": x.ravel().tolist(),
                    }
                ]
            }
            response = await client.post("/v2/models/tab/infer", json=body)
            assert response.status_code == 200, response.text
            return np.reshape(response.json()["outputs"][0]["data"], (x.shape[0], 3))


async def test_torchscript_matches_onnxruntime(tmp_path: Path) -> None:
    store = tmp_path / "store"
    add_torchscript(classifier(store))
    x = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    scripted = await answers(store, "torchscript", x)
    onnx = await answers(store, "onnxruntime", x)
    np.testing.assert_allclose(scripted, onnx, atol=1e-5)


async def test_missing_torchscript_artifact_leaves_model_unavailable(tmp_path: Path) -> None:
    store = tmp_path / "store"
    classifier(store)
    app = create_app(Settings(model_store=store, backend="torchscript", _env_file=None))  # type: ignore[call-arg]
    async with app.router.lifespan_context(app):
        await wait_ready(app)
        model = app.state.dataplane.repository.get("tab")
        assert not model.ready
        assert "no torchscript artifact" in model.reason
