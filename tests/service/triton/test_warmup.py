"""`model_warmup`: samples run before a model is ready, a file's raw data included; a sample
that does not fit keeps the model out of service with the reason."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np

from service.app import create_app
from service.settings import Settings
from tests.service.triton.models import model_folder, two_heads_model

WARMUP = """max_batch_size: 4
model_warmup [{{
  name: "sample"
  batch_size: 2
  inputs {{ key: "features" value: {{ data_type: TYPE_FP32 dims: [4] {source} }} }}
}}]
"""


async def states(store: Path) -> dict[str, tuple[int, str]]:
    app = create_app(Settings(model_store=store, management_token="m", _env_file=None))  # type: ignore[call-arg]
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.loading, 60)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://g") as client:
            index = await client.post("/v2/repository/index", headers={"Authorization": "Bearer m"})
            ready = {
                name: (await client.get(f"/v2/models/{name}/ready")).status_code
                for name in ("good", "short", "random")
            }
    reasons = {entry["name"]: entry["reason"] for entry in index.json()}
    return {name: (code, reasons[name]) for name, code in ready.items()}


def test_warmup_samples_from_files_and_random_data(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for name, source in (
        ("good", 'input_data_file: "features.raw"'),
        ("short", 'input_data_file: "features.raw"'),
        ("random", "random_data: true"),
    ):
        folder = model_folder(store, name, WARMUP.format(source=source))
        two_heads_model(folder / "1" / "model.onnx")
        (folder / "warmup").mkdir()
    np.arange(4, dtype=np.float32).tofile(store / "good" / "warmup" / "features.raw")
    np.arange(3, dtype=np.float32).tofile(store / "short" / "warmup" / "features.raw")
    found = asyncio.run(states(store))
    assert found["good"] == (200, "")
    assert found["random"] == (200, "")
    code, reason = found["short"]
    assert code == 503
    assert "model_warmup" in reason and "features.raw" in reason
