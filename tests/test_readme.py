"""The README's examples, run as a reader runs them, against a live gateway serving every
default model (trained small): each `curl` line for real, with `curl` and `jq`, and the Python
snippets with stock tritonclient. The commands are read from README.md itself, so the document
and the test cannot drift apart; a new command without a check here fails the test."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.manifest import Manifest, SeriesPreprocessing, TabularPreprocessing
from tests.readme import OWN_MODEL_MARKER, blocks, curl_lines, readme_block
from tests.servers import GatewayProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README_HTTP = "localhost:8000"
DIABETES_TARGETS = (25.0, 346.0)
"""Disease progression in sklearn's diabetes data: every target lies in this range."""
NEXT_CO2_WEEK = 371.5
"""What Mauna Loa measured the week after the README's 30-week series."""

Check = Callable[[Any, Path], None]
"""(the answer, the gateway's model store) -> assertions."""


def manifest(store: Path, name: str) -> Manifest:
    return Manifest.read(store / name / "1")


def check_iris_metadata(answer: Any, store: Path) -> None:
    assert answer["name"] == "iris"
    assert answer["inputs"][0]["shape"] == [-1, 4]
    names = [feature["name"] for feature in answer["parameters"]["features"]]
    assert names == [
        "sepal length (cm)",
        "sepal width (cm)",
        "petal length (cm)",
        "petal width (cm)",
    ]


def check_iris_v2(answer: Any, store: Path) -> None:
    (output,) = answer["outputs"]
    assert output["name"] == "probabilities" and output["shape"] == [1, 3]
    assert math.isclose(sum(output["data"]), 1.0, abs_tol=1e-5)


def check_iris_labels(answer: Any, store: Path) -> None:
    assert set(answer) == {"setosa", "versicolor", "virginica"}
    assert math.isclose(sum(answer.values()), 1.0, abs_tol=1e-5)


def check_digit(answer: Any, store: Path) -> None:
    assert len(answer) == 5 and set(answer) <= {str(d) for d in range(10)}
    assert all(0.0 <= p <= 1.0 for p in answer.values())


def check_embedding(answer: Any, store: Path) -> None:
    assert len(answer) == 384
    assert math.isclose(float(np.linalg.norm(answer)), 1.0, abs_tol=1e-4)


def check_diabetes(answer: Any, store: Path) -> None:
    ((value,),) = answer["predictions"]
    pre = manifest(store, "diabetes").preprocessing
    assert isinstance(pre, TabularPreprocessing) and pre.target_range is not None
    assert DIABETES_TARGETS[0] <= pre.target_range.min < pre.target_range.max <= DIABETES_TARGETS[1]
    assert pre.target_range.min <= value <= pre.target_range.max, value


def plausible_co2(value: float, store: Path) -> None:
    """Within the series' range seen in training, widened by the rise since (the tail is new)."""
    pre = manifest(store, "lstm").preprocessing
    assert isinstance(pre, SeriesPreprocessing) and pre.value_range is not None
    low, high = pre.value_range.min, pre.value_range.max
    assert low <= value <= high + 0.5 * (high - low), value
    assert abs(value - NEXT_CO2_WEEK) < 15, value


def check_lstm_forecast(answer: Any, store: Path) -> None:
    assert set(answer) == {"forecast"} and len(answer["forecast"]) == 1
    plausible_co2(answer["forecast"][0], store)


def check_lstm_v1(answer: Any, store: Path) -> None:
    ((value,),) = answer["predictions"]
    plausible_co2(value, store)


def check_metrics(answer: Any, store: Path) -> None:
    assert isinstance(answer, str)
    samples = [line for line in answer.splitlines() if not line.startswith("#")]
    assert samples and all(line.startswith("gateway_requests_total{") for line in samples)
    assert any('code="200"' in line for line in samples)


CHECKS: dict[str, Check] = {
    "/v2/models/iris ": check_iris_metadata,
    "/v2/models/iris/infer": check_iris_v2,
    "/predictions/iris": check_iris_labels,
    "/predictions/digits": check_digit,
    "/predictions/minilm": check_embedding,
    "/v1/models/diabetes:predict": check_diabetes,
    "/predictions/lstm": check_lstm_forecast,
    "/v1/models/lstm:predict": check_lstm_v1,
    "/metrics": check_metrics,
}
"""A fragment of the command line -> what its answer must satisfy."""

PYTHON_RUNNERS = {
    "mymodel": "tests/test_readme.py::test_serve_your_own_model",
    "lstm_stream": "tests/test_readme.py::test_tritonclient_streaming_example",
    "tritonclient.http": "tests/test_readme.py::test_tritonclient_http_example",
    "tritonclient.grpc": "tests/service/grpc/test_default_models.py",
}
OTHER_RUNNERS = {"grpcurl ": "tests/service/grpc/test_default_models.py"}


def check_for(line: str) -> Check:
    found = [check for fragment, check in CHECKS.items() if fragment in line + " "]
    assert len(found) == 1, f"no check (or several) for README line: {line}"
    return found[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the commands run: holds the `some_digit.png` the README's upload line sends."""
    from sklearn.datasets import load_digits

    directory = tmp_path_factory.mktemp("readme")
    digit = load_digits().images[3]  # a "3", 0..16, bright ink on dark
    pixels = (digit * 255 / 16).astype(np.uint8)
    Image.fromarray(pixels, mode="L").resize((28, 28), Image.Resampling.BILINEAR).save(
        directory / "some_digit.png"
    )
    return directory


def run_curl(line: str, server: GatewayProcess, cwd: Path) -> str:
    assert shutil.which("curl") and shutil.which("jq"), "the README's examples use curl and jq"
    command = line.replace(README_HTTP, f"127.0.0.1:{server.port}")
    # A non-2xx answer fails curl (exit 22) and, through pipefail, the whole line.
    command = command.replace("curl -s ", "curl -sS --fail-with-body ", 1)
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{line}\nexit {done.returncode}: {done.stdout}{done.stderr}"
    return done.stdout


def test_the_readme_shows_curl_commands() -> None:
    lines = curl_lines()
    assert len(lines) >= 9
    for line in lines:
        assert README_HTTP in line, line
        check_for(line)


def test_every_command_against_a_server_has_a_runner() -> None:
    """Each README block that talks to localhost:8000/8001 is run by some test."""
    for block in blocks():
        if not re.search(r"localhost:800[01]", block.text):
            continue
        if block.language == "python":
            runners = [test for marker, test in PYTHON_RUNNERS.items() if marker in block.text]
        else:
            runners = [
                "curl"
                if line.strip().startswith("curl ")
                else next((t for m, t in OTHER_RUNNERS.items() if line.startswith(m)), "")
                for line in block.text.splitlines()
                if re.search(r"localhost:800[01]", line)
            ]
        assert runners and all(runners), f"README block without a test:\n{block.text}"


@pytest.mark.parametrize("line", curl_lines(), ids=lambda line: line.split()[2])
def test_curl_line(
    default_gateway: GatewayProcess, default_store: Path, workdir: Path, line: str
) -> None:
    check = check_for(line)
    output = run_curl(line, default_gateway, workdir)
    answer: Any = output if "/metrics" in line else json.loads(output)
    check(answer, default_store)


def test_tritonclient_http_example(
    default_gateway: GatewayProcess, default_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = readme_block("import numpy as np, tritonclient.http").replace(
        README_HTTP, f"127.0.0.1:{default_gateway.port}"
    )
    exec(compile(source, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    values = np.array(printed.replace("[", " ").replace("]", " ").split(), dtype=np.float32)
    assert values.shape == (1,)
    plausible_co2(float(values[0]), default_store)


def test_tritonclient_streaming_example(
    default_gateway: GatewayProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's stream of 30 weekly readings to `lstm_stream`: its last forecast equals
    the windowed `lstm`'s on the same weeks."""
    import tritonclient.http as httpclient

    source = readme_block('"lstm_stream"').replace("localhost:8001", default_gateway.grpc_address)
    namespace: dict[str, Any] = {}
    exec(compile(source, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    streamed = np.array(printed.replace("[", " ").replace("]", " ").split(), dtype=np.float32)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{default_gateway.port}")
    series = httpclient.InferInput("series", [1, 30, 1], "FP32")
    series.set_data_from_numpy(np.array(namespace["weeks"], dtype=np.float32).reshape(1, 30, 1))
    windowed = client.infer("lstm", [series]).as_numpy("forecast")
    client.close()
    assert streamed.shape == (1,)
    np.testing.assert_allclose(streamed, windowed.reshape(-1), atol=1e-3, rtol=0)


def test_serve_your_own_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ "Serve your own model", as a reader with a `model.onnx` of their own runs it: the
    shell lines in a fresh folder (the server started as the README starts it), then the
    tritonclient program; answers equal ONNX Runtime's in-process."""
    import sys

    import onnxruntime as ort

    from tests.servers import gateway
    from tests.service.triton.models import two_heads_model

    model = two_heads_model(tmp_path / "model.onnx")
    shell = readme_block(OWN_MODEL_MARKER).splitlines()
    python = f"{sys.executable} -m service"
    served = [line for line in shell if "--model-store my_store" in line]
    assert len(served) == 1
    flags = served[0].split("&")[0].split()[3:]  # after `python -m service`
    for line in shell:
        if line.startswith(("mkdir", "python -m service inspect")):
            command = line.split("#")[0].replace("python -m service", python)
            done = subprocess.run(
                ["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stderr
            if "inspect" in line:
                assert 'name: "mymodel"' in done.stdout and "max_batch_size: 4" in done.stdout
    args = flags[flags.index("my_store") + 1 :]
    with gateway(tmp_path / "my_store", tmp_path, args=args, timeout_s=120) as server:
        outputs = [run_curl(line, server, tmp_path) for line in shell if line.startswith("curl ")]
        assert json.loads(outputs[0]) == 4
        answer = json.loads(outputs[1])
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        x = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
        scores, _total = session.run(["scores", "total"], {"features": x})
        got = {o["name"]: o["data"] for o in answer["outputs"]}
        np.testing.assert_allclose(got["scores"], scores.ravel(), atol=1e-6)
        source = readme_block("import tritonclient.grpc as grpcclient").replace(
            "localhost:8001", server.grpc_address
        )
        exec(compile(source, "README.md", "exec"), {})
    printed = capsys.readouterr().out.split("\n")
    values = np.array(printed[0].replace("[", " ").replace("]", " ").split(), dtype=np.float32)
    np.testing.assert_allclose(values, scores.ravel(), atol=1e-6)
    assert printed[1].strip() == "2"  # the curl line's row and the program's
