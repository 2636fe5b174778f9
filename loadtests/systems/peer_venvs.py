"""Virtual environments for peer servers, created on demand under `loadtests/.peers/` (git-ignored).

Each peer gets its own venv so that its pins never touch the project's. A peer that cannot be
installed is reported as skipped by the caller; nothing is faked.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parents[1] / ".peers"
ORT = "onnxruntime==1.31.1"
ORT_GPU = "onnxruntime-gpu==1.31.1"


@dataclass(frozen=True)
class PeerSpec:
    name: str
    requirements: tuple[str, ...]
    probe: str
    """A module whose import proves the install worked."""


PEERS: dict[str, PeerSpec] = {
    "pytriton": PeerSpec("pytriton", ("nvidia-pytriton==0.7.0", ORT), "pytriton.triton"),
    "kserve": PeerSpec("kserve", ("kserve==0.21.0", ORT), "kserve"),
    # MLServer's parallel workers break with uvloop 0.22+.
    "mlserver": PeerSpec("mlserver", ("mlserver==1.7.1", "uvloop<0.22", ORT), "mlserver"),
    "litserve": PeerSpec("litserve", ("litserve==0.2.19", ORT), "litserve"),
}


class PeerUnavailable(RuntimeError):
    """The peer's environment could not be created; the message says why."""


def requirements(spec: PeerSpec, device: str = "cpu") -> tuple[str, ...]:
    """The spec's pins; on CUDA, ONNX Runtime's GPU build instead of the CPU one."""
    if device != "cuda":
        return spec.requirements
    return tuple(ORT_GPU if item == ORT else item for item in spec.requirements)


def venv_name(name: str, device: str = "cpu") -> str:
    return name if device != "cuda" else f"{name}-cuda"


def _stamp(spec: PeerSpec, device: str) -> str:
    return hashlib.sha256("\n".join(requirements(spec, device)).encode()).hexdigest()[:16]


def venv_python(name: str, root: Path = PEERS_DIR) -> Path:
    return root / name / "bin" / "python"


def is_installed(name: str, root: Path = PEERS_DIR, device: str = "cpu") -> bool:
    folder = venv_name(name, device)
    stamp_file = root / folder / ".installed"
    return (
        venv_python(folder, root).exists()
        and stamp_file.exists()
        and stamp_file.read_text() == _stamp(PEERS[name], device)
    )


def python_lib_dir() -> str:
    """The running interpreter's own `lib` directory (where libpython lives)."""
    return str(sysconfig.get_config_var("LIBDIR") or Path(sys.base_prefix) / "lib")


def ensure_peer(
    name: str,
    root: Path = PEERS_DIR,
    *,
    install: bool = True,
    device: str = "cpu",
    log: Path | None = None,
) -> Path:
    """Return the peer venv's python, creating and installing it first if needed."""
    spec = PEERS[name]
    folder = venv_name(name, device)
    python = venv_python(folder, root)
    if is_installed(name, root, device):
        return python
    if not install:
        raise PeerUnavailable(
            f"{name}: not installed under {root / folder} (run without --no-install to create it)"
        )
    root.mkdir(parents=True, exist_ok=True)
    sink = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        steps = [
            [
                getattr(sys, "_base_executable", sys.executable),
                "-m",
                "venv",
                "--clear",
                str(root / folder),
            ],
            [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
            [str(python), "-m", "pip", "install", "--quiet", *requirements(spec, device)],
            [str(python), "-c", f"import {spec.probe}"],
        ]
        for step in steps:
            done = subprocess.run(step, stdout=sink, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                raise PeerUnavailable(
                    f"{name}: `{' '.join(step[-3:])}` failed with exit code {done.returncode}"
                    + (f" (see {log})" if log is not None else "")
                )
    finally:
        if log is not None and not isinstance(sink, int):
            sink.close()
    (root / folder / ".installed").write_text(_stamp(spec, device))
    return python


def installed_peers(root: Path = PEERS_DIR, device: str = "cpu") -> list[str]:
    """Peers whose venv is already installed (no network)."""
    return [name for name in PEERS if is_installed(name, root, device)]
