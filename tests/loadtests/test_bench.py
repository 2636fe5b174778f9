"""Smoke test: `python -m loadtests.bench` in a tiny mode, then its outputs' shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.systems.peer_venvs import installed_peers
from tests.tiny_models import classifier, image_classifier

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def test_tiny_run_writes_results_docs_and_plots(tmp_path: Path) -> None:
    store = tmp_path / "store"
    classifier(store)
    classifier(store, version=2)
    image_classifier(store)
    # Our gateway always; peers only where their venv is already installed (no network here).
    systems = ["raw", "gateway", *installed_peers()]
    out, docs = tmp_path / "results", tmp_path / "docs"
    command = [
        sys.executable,
        "-m",
        "loadtests.bench",
        "--model-store",
        str(store),
        "--models",
        "tab,img",
        "--systems",
        ",".join(systems),
        "--concurrency",
        "2",
        "--duration",
        "1",
        "--repeat",
        "2",
        "--warmup",
        "0",
        "--raw-batches",
        "1,4",
        "--raw-seconds",
        "0.2",
        "--raw-rounds",
        "1",
        "--no-install",
        "--out",
        str(out),
        "--docs",
        str(docs),
    ]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr

    results = json.loads((out / "latest.json").read_text())
    assert {"machine", "config", "raw", "servers", "points", "failures", "skipped"} <= set(results)
    assert results["machine"]["cpu"] and results["machine"]["versions"]["gateway"]
    assert set(results["raw"]) == {"tab", "img"}
    for raw in results["raw"].values():
        configured = [p for p in raw["batches"] if p["round"] == 1]
        # Each setting: the batch sizes back to back, then batch 1 paced (the default idle).
        assert [(p["batch"], p["spinning"], p["idle_gap_ms"] > 0) for p in configured] == [
            (1, True, False),
            (4, True, False),
            (1, True, True),
            (1, False, False),
            (4, False, False),
            (1, False, True),
        ]
        assert raw["batch1_paced_p50_ms"] > 0
        # Then the batch sizes the gateway formed that were not measured yet, both settings.
        formed = [p for p in raw["batches"] if p["round"] == "formed"]
        assert all(p["batch"] not in (1, 4) for p in formed)
        assert len(formed) == 2 * len({p["batch"] for p in formed})
        assert raw["limit_items_per_s"] > 0 and raw["batch1_p50_ms"] > 0
    measured = {(p["system"], p["model"]) for p in results["points"]}
    for system in (
        "gateway-v2-json",
        "gateway-v2-binary",
        "gateway-predictions",
        "gateway-v2-grpc",
    ):
        assert {(system, "tab"), (system, "img")} <= measured
    grpc_points = [p for p in results["points"] if p["system"].endswith("-grpc")]
    assert all(p["generator"] == results["config"]["grpc_generator"] for p in grpc_points)
    assert all(p["client_cpu_us_per_call"] > 0 for p in grpc_points)
    ceiling = results["grpc_generator"]
    used = [row for row in ceiling["points"] if row["generator"] == ceiling["engine"]]
    assert [row["concurrency"] for row in used] == [1, 2]
    assert all(row["throughput"] > 0 and row["errors"] == 0 for row in ceiling["points"])
    for point in results["points"]:
        assert point["concurrency"] == 2
        assert point["requests"] > 0 and point["errors"] == 0, point
        assert set(point["latency_ms"]) >= {"p50", "p99", "mean"}
        # Two runs per point; the one kept is the slower (the lower median of two).
        assert len(point["repeats"]) == 2 and point["throughput"] == min(point["repeats"])
    # Every server got one version of each model, the newest.
    (served,) = out.glob("bench-*/store")
    assert sorted(p.relative_to(served).as_posix() for p in served.glob("*/*")) == [
        "img/1",
        "tab/2",
    ]
    assert results["servers"]["gateway"]["cold_start_s"] > 0
    assert results["servers"]["gateway"]["rss_loaded_mb"] > 0
    # Every installed peer either produced points or says why not.
    for peer in installed_peers():
        produced = any(p["system"].startswith(peer) for p in results["points"])
        explained = any(s["server"] == peer for s in results["skipped"])
        assert produced or explained, peer

    copy = json.loads((docs / "benchmarks.json").read_text())
    assert copy["points"] == results["points"] and "goals" in copy
    page = (docs / "benchmarks.md").read_text()
    for heading in (
        "# Benchmarks",
        "## Machine",
        "## Goals",
        "### tab",
        "### img",
        "## gRPC load generator",
        "## Cold start and memory",
        "## GPU",
    ):
        assert heading in page
    for image in ("bench_throughput.png", "bench_latency.png"):
        assert (docs / "images" / image).read_bytes().startswith(PNG)
        assert f"images/{image}" in page
