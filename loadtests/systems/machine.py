"""What the benchmark ran on: CPU, cores, memory, versions, date, and how busy the machine was."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import psutil

from loadtests.systems.peer_venvs import PEERS, PEERS_DIR, is_installed, venv_name, venv_python

PROJECT_PACKAGES = (
    "onnxruntime",
    "onnxruntime-gpu",
    "numpy",
    "fastapi",
    "uvicorn",
    "torch",
    "torchserve",
    "locust",
)
PEER_PACKAGES = {
    "pytriton": "nvidia-pytriton",
    "kserve": "kserve",
    "mlserver": "mlserver",
    "litserve": "litserve",
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def peer_version(name: str, device: str = "cpu") -> str | None:
    if not is_installed(name, PEERS_DIR, device):
        return None
    python = venv_python(venv_name(name, device), PEERS_DIR)
    runtime = "onnxruntime-gpu" if device == "cuda" else "onnxruntime"
    code = (
        "import importlib.metadata as m; "
        f"print(m.version({PEER_PACKAGES[name]!r}) + ' + {runtime} ' + m.version({runtime!r}))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def wrk_version() -> str | None:
    try:
        done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    match = re.search(r"wrk (\S+)", done.stdout + done.stderr)
    return match.group(1) if match else None


def gpu_name() -> str | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None


def describe(device: str = "cpu") -> dict[str, Any]:
    from service import __version__

    versions = {name: v for name in PROJECT_PACKAGES if (v := _version(name)) is not None}
    versions["gateway"] = __version__
    versions["python"] = platform.python_version()
    if (wrk := wrk_version()) is not None:
        versions["wrk"] = wrk
    for peer in PEERS:
        if (found := peer_version(peer, device)) is not None:
            versions[peer] = found
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "device": device,
        "gpu": gpu_name() if device == "cuda" else None,
        "versions": versions,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
