"""The LitServe peer: a real LitServer on a free port answers as in-process ONNX Runtime does."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from loadtests.drive.catalog import BenchModel, load_model
from loadtests.drive.payloads import Feed, sample_feed, v2_json
from loadtests.systems import peers, raw
from loadtests.systems.deployment import Context, Unavailable
from tests.tiny_models import classifier, image_classifier

pytestmark = pytest.mark.integration


def _post(url: str, body: bytes) -> dict[str, np.ndarray]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    return {
        out["name"]: np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        for out in answer["outputs"]
    }


def _expected(model: BenchModel, feed: Feed) -> dict[str, np.ndarray]:
    session = raw.open_session(model.version_dir / "model.onnx")
    outputs = session.run(model.output_names, feed)
    return dict(zip(model.output_names, outputs, strict=True))


def test_litserve_answers_like_onnx_runtime(tmp_path: Path) -> None:
    store = tmp_path / "store"
    classifier(store)
    image_classifier(store)
    models = [load_model(store, "tab"), load_model(store, "img")]
    ctx = Context(store=store, models=models, work_dir=tmp_path, startup_timeout_s=120)
    # Different rows per request (1 to 4), sent together so LitServe stacks some of them into
    # one batch and must hand every request its own rows back.
    feeds = {
        model.name: [
            sample_feed(model.manifest, model.version_dir, rows, seed=seed)
            for seed, rows in enumerate((1, 3, 1, 4, 2, 1))
        ]
        for model in models
    }
    try:
        with peers.litserve(ctx) as deployment:
            (info,) = deployment.servers
            assert info.name == "litserve" and info.cold_start_s > 0
            targets = deployment.targets["litserve-v2-json"]
            # The bench's own body (the one wrk posts to the gateway) at the bench's own URL.
            for model in models:
                target = targets[model.name]
                assert target.body == model.v2_json
                got = _post(target.url, target.body)
                for name, array in _expected(model, model.feed).items():
                    np.testing.assert_allclose(got[name], array, rtol=1e-5, atol=1e-6)
            with ThreadPoolExecutor(max_workers=6) as pool:
                for model in models:
                    url = targets[model.name].url
                    answers = pool.map(
                        lambda feed, u=url: _post(u, v2_json(feed)), feeds[model.name]
                    )
                    for feed, got in zip(feeds[model.name], answers, strict=True):
                        for name, array in _expected(model, feed).items():
                            assert got[name].shape == array.shape
                            np.testing.assert_allclose(got[name], array, rtol=1e-5, atol=1e-6)
    except Unavailable as error:
        pytest.skip(f"litserve cannot be installed here: {error}")
