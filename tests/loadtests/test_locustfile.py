"""The Locust scenarios, headless for a few seconds against a real tiny gateway."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import gateway
from tests.tiny_models import full_store

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_make_loadtest_driver_reports_both_sides(tmp_path: Path) -> None:
    store = full_store(tmp_path / "store")
    out = tmp_path / "results"
    env = {
        **os.environ,
        "LOADTEST_TABULAR_MODEL": "tab",
        "LOADTEST_IMAGE_MODEL": "img",
        "LOADTEST_UPLOAD_MODEL": "img",
        "LOADTEST_TEXT_MODEL": "txt",
    }
    with gateway(store, tmp_path) as server:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "loadtests.locust_run",
                "--host",
                server.url,
                "--tags",
                "v2json,v2binary,upload,text",
                "--steps",
                "1,2",
                "--step-seconds",
                "4",
                "--ramp-seconds",
                "0.5",
                "--out",
                str(out),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr

    with (out / "locust_stats.csv").open(newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    for name in (
        "v2 json /v2/models/[model]/infer",
        "v2 binary /v2/models/[model]/infer",
        "upload image/png /predictions/[model]",
        "text /predictions/[model]",
        "text v2 BYTES /v2/models/[model]/infer",
    ):
        assert int(rows[name]["Request Count"]) > 0, name
    assert all(row["Failure Count"] == "0" for row in rows.values()), rows
    assert (out / "locust.html").stat().st_size > 0

    # The server-side split printed beside Locust's percentiles, one line per model.
    report = done.stdout
    assert "client side (Locust)" in report and "server side (/metrics)" in report
    for model in ("tab/1", "img/1", "txt/1"):
        line = next(line for line in report.splitlines() if line.startswith(model))
        assert len(line.split()) == 9, line


def test_grpc_scenario_reports_its_calls(tmp_path: Path) -> None:
    store = full_store(tmp_path / "store")
    out = tmp_path / "results"
    env = {**os.environ, "LOADTEST_GRPC_MODEL": "tab"}
    with gateway(store, tmp_path) as server:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "loadtests.locust_run",
                "--host",
                server.url,
                "--grpc-host",
                server.grpc_address,
                "--tags",
                "grpc",
                "--steps",
                "1,2",
                "--step-seconds",
                "3",
                "--ramp-seconds",
                "0.5",
                "--out",
                str(out),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    with (out / "locust_stats.csv").open(newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    infer = rows["grpc ModelInfer [model]"]
    assert infer["Type"] == "grpc" and int(infer["Request Count"]) > 0
    assert all(row["Failure Count"] == "0" for row in rows.values()), rows
    # The gateway saw the same calls: its split has a line for the model.
    assert any(line.startswith("tab/1") for line in done.stdout.splitlines()), done.stdout
