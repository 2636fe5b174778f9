"""`python -m loadtests.gpu_check --device cpu`: the GPU check's whole path on a tiny CNN, as CI
runs it, so that the command is known to work before a GPU machine is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_cpu_run_serves_the_tiny_model_and_writes_one_json(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "loadtests.gpu_check", "--device", "cpu"]
    command += ["--concurrency", "1,2", "--duration", "1", "--warmup", "0.5", "--slo-ms", "1000"]
    env = {**os.environ, "OUT": str(out)}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert [path.name for path in out.glob("*.json")] == ["gpu_check.json"]
    check = json.loads((out / "gpu_check.json").read_text())

    assert check["machine"]["device"] == "cpu" and check["machine"]["torch"]
    assert check["missing"] == [] and check["skipped"] == []
    assert check["models"]["tiny"]["source"] == "tiny CNN"
    assert check["servers"]["gateway-torchscript"]["cold_start_s"] > 0
    (run,) = check["runs"]
    assert (run["model"], run["backend"], run["error"]) == ("tiny", "torchscript", None)
    # Both points measured through the gateway, with its own split from /metrics.
    assert [p["concurrency"] for p in run["points"]] == [1, 2]
    for point in run["points"]:
        assert point["errors"] == 0 and point["requests"] > 10, point
        assert point["server_ms"]["mean_batch_size"] >= 1
    best = run["best"]
    assert best["images_per_s"] == max(p["throughput"] for p in run["points"])
    # Raw torch at batch 1 and at every batch size the gateway formed.
    formed = {max(1, round(p["server_ms"]["mean_batch_size"])) for p in run["points"]}
    assert {p["batch"] for p in run["raw"]} == {1, *formed}
    assert all(p["items_per_s"] > 0 and p["calls"] > 0 for p in run["raw"])
    raw_at_best = next(p for p in run["raw"] if p["batch"] == best["formed_batch"])
    assert run["best_vs_raw"] == pytest.approx(
        best["images_per_s"] / raw_at_best["items_per_s"], rel=1e-2
    )


@pytest.mark.slow
def test_cpu_run_compiles_and_serves_the_pt2_backend(tmp_path: Path) -> None:
    """The .pt2 path: AOTInductor compiles the tiny CNN (about 20 s here), the gateway serves it."""
    out = tmp_path / "gpu_check.json"
    command = [sys.executable, "-m", "loadtests.gpu_check", "--device", "cpu", "--backends", "pt2"]
    command += ["--concurrency", "2", "--duration", "1", "--warmup", "0", "--out", str(out)]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    check = json.loads(out.read_text())
    assert check["skipped"] == []
    (run,) = check["runs"]
    assert (run["backend"], run["error"]) == ("pt2", None)
    (point,) = run["points"]
    assert point["errors"] == 0 and point["requests"] > 10
    assert run["raw"] and all(p["items_per_s"] > 0 for p in run["raw"])
