"""Every serving path gives the same answer for every default model, for every kind of input:
ONNX Runtime and the TorchScript backend in process, a real TorchServe serving our archive,
the gateway in front of that TorchServe, and the gateway's native runtime on the same archive
(all within 1e-4)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from deploy.torchserve.archive import build_archives, latest_versions
from deploy.torchserve.launcher import TorchServe, launch
from service.backends.torchscript import TorchScriptBackend
from service.input_limits import Limits
from service.manifest import Manifest
from service.processing import Processor, processor_for
from tests.defaults import STATELESS_MODELS
from tests.handlers.servers import Reference, assert_answers_close, require_java
from tests.servers import GatewayProcess, gateway

# Module fixtures start a TorchServe and gateways (minutes on 2 busy cores) in the first test.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@dataclass
class Paths:
    store: Path
    torchserve: TorchServe
    in_front: GatewayProcess
    native: GatewayProcess


@pytest.fixture(scope="module")
def paths(default_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paths]:
    require_java()
    root = tmp_path_factory.mktemp("parity")
    archives = root / "archives"
    build_archives(default_store, archives)
    torchserve = launch(archives, root / "torchserve", list(STATELESS_MODELS), batch_size=1)
    in_front_env = {
        "GATEWAY_BACKEND": "torchserve",
        "GATEWAY_TORCHSERVE_URL": torchserve.inference_url,
        "GATEWAY_TORCHSERVE_KEY_FILE": str(torchserve.key_file),
    }
    try:
        with (
            gateway(default_store, root, env=in_front_env, timeout_s=180) as in_front,
            gateway(
                archives, root, env={"GATEWAY_BACKEND": "torchserve-native"}, timeout_s=240
            ) as native,
        ):
            yield Paths(default_store, torchserve, in_front, native)
    finally:
        torchserve.stop()


def png(size: int, mode: str, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def inputs_for(manifest: Manifest) -> list[tuple[bytes, str]]:
    """The inputs its users send: JSON features, an uploaded image, text, a series."""
    pre = manifest.preprocessing.model_dump()
    kind = pre["kind"]
    if kind == "tabular":
        ranges = pre["feature_ranges"]
        row = {
            name: round((span["min"] + span["max"]) / 2 + 0.1 * i, 3)
            for i, (name, span) in enumerate(zip(pre["feature_names"], ranges, strict=True))
        }
        rows = [[value * (1 + 0.05 * k) for value in row.values()] for k in range(3)]
        return [
            (json.dumps(row).encode(), "application/json"),
            (json.dumps(rows).encode(), "application/json"),
        ]
    if kind == "image":
        mode = "L" if pre["channels"] == 1 else "RGB"
        return [(png(40, mode, seed), "image/png") for seed in (1, 2)]
    if kind == "text":
        return [(b"serving every path alike", "text/plain"), (b"a b c", "text/plain")]
    span = pre["value_range"]
    series = np.linspace(span["min"], span["max"], pre["window"]).round(2).tolist()
    return [(json.dumps({"series": series}).encode(), "application/json")]


def expected_from(processor: Processor, outputs_of: Any, body: bytes, content_type: str) -> Any:
    inputs, many = processor.inputs_from_body(body, content_type)
    predictions = processor.predictions(outputs_of(processor.feed(inputs)), top_k=5)
    return predictions if many else predictions[0]


@pytest.mark.parametrize("model", STATELESS_MODELS)
def test_every_path_answers_alike(paths: Paths, model: str) -> None:
    directory = latest_versions(paths.store)[model]
    manifest = Manifest.read(directory)
    processor = processor_for(manifest, directory, Limits())
    onnx = Reference(directory)
    assert manifest.artifacts.torchscript is not None
    torchscript = TorchScriptBackend(manifest, directory / manifest.artifacts.torchscript)
    torchscript.load_sync()
    token = {"Authorization": f"Bearer {paths.torchserve.token}"}
    servers = {
        "torchserve": (paths.torchserve.inference_url, token),
        "gateway->torchserve": (paths.in_front.url, {}),
        "native": (paths.native.url, {}),
    }
    for body, content_type in inputs_for(manifest):
        expected = expected_from(processor, onnx.outputs, body, content_type)
        assert_answers_close(
            expected_from(processor, torchscript.run, body, content_type), expected
        )
        for name, (url, headers) in servers.items():
            answer = httpx.post(
                f"{url}/predictions/{model}",
                content=body,
                headers={**headers, "Content-Type": content_type},
                timeout=60,
            )
            assert answer.status_code == 200, (name, answer.text)
            assert_answers_close(answer.json(), expected)
