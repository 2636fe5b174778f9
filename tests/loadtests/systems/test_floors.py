"""The floors: each answers the gateway's own requests, and a point on it records the server's
CPU per request; and the CPU accounting counts a whole process tree."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from loadtests.drive.catalog import load_model
from loadtests.drive.points import Load, check, measure_point
from loadtests.systems import procs
from loadtests.systems.deployment import Context
from loadtests.systems.floors import FLOOR_SYSTEMS, floors
from tests.tiny_models import classifier

BURN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"


def _burner(seconds: float, *, child: bool) -> list[str]:
    """A process that burns `seconds` of CPU itself, or has a child that does and waits."""
    code = BURN.format(s=seconds)
    if child:
        code = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {code!r}])\n"
    return [sys.executable, "-c", code + "import time\ntime.sleep(30)\n"]


@pytest.mark.parametrize("child", [False, True], ids=["itself", "reaped-child"])
def test_tree_cpu_counts_the_process_and_its_children(tmp_path: Path, child: bool) -> None:
    process = procs.spawn(_burner(0.3, child=child), tmp_path / "burn.log")
    try:
        deadline = time.monotonic() + 30
        while procs.tree_cpu_s([process.pid]) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        used = procs.tree_cpu_s([process.pid])
        assert 0.3 <= used < 3.0
    finally:
        procs.stop(process)
    assert procs.tree_cpu_s([process.pid]) == 0.0  # gone: nothing left to count


def test_an_idle_process_uses_no_cpu_between_readings(tmp_path: Path) -> None:
    process = procs.spawn([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "l")
    try:
        time.sleep(0.3)
        before = procs.tree_cpu_s([process.pid])
        time.sleep(0.3)
        assert procs.tree_cpu_s([process.pid]) - before < 0.05
    finally:
        procs.stop(process)


@pytest.mark.integration
def test_floors_answer_and_record_cpu_per_request(tmp_path: Path) -> None:
    classifier(tmp_path / "store")
    model = load_model(tmp_path / "store", "tab")
    ctx = Context(store=tmp_path / "store", models=[model], work_dir=tmp_path / "work")
    load = Load(duration_s=1.0, warmup_s=0.0, grpc_engine="python")
    with floors(ctx) as deployment:
        assert set(deployment.targets) == set(FLOOR_SYSTEMS)
        for system in FLOOR_SYSTEMS:
            request = deployment.targets[system]["tab"]
            assert check(request) is None, system
            pids = deployment.pids_of(system)
            assert len(pids) == 1
            point = measure_point(system, "tab", request, 2, load, pids=pids)
            assert point.requests > 0 and point.errors == 0, system
            assert point.server_cpu_ms is not None and point.server_cpu_ms > 0, system
