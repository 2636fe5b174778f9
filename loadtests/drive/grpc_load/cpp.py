"""The C++ generator, grpc_gen (`loadtests/grpc_gen/grpc_gen.cc`): built once per source version,
on demand; and the choice between it and the Python workers."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from loadtests.drive.grpc_load.request import GrpcLoadError

LOADTESTS = Path(__file__).resolve().parents[2]
CPP_SOURCE = LOADTESTS / "grpc_gen" / "grpc_gen.cc"
BUILD_DIR = LOADTESTS / "results" / "bin"
"""Where grpc_gen is built (git-ignored, like every result)."""
ENGINES = ("auto", "cpp", "python")


# --- the C++ generator: built once per source version, on demand ----------------------------


def cpp_binary() -> Path:
    """grpc_gen built from `grpc_gen/grpc_gen.cc` (cached by the source's hash)."""
    source = CPP_SOURCE.read_bytes()
    binary = BUILD_DIR / f"grpc_gen-{hashlib.sha256(source).hexdigest()[:12]}"
    if binary.exists():
        return binary
    compiler = shutil.which("g++")
    pkg_config = shutil.which("pkg-config")
    if compiler is None or pkg_config is None:
        raise GrpcLoadError("g++ and pkg-config are needed to build grpc_gen")
    flags = subprocess.run(
        [pkg_config, "--cflags", "--libs", "grpc++"], capture_output=True, text=True, check=False
    )
    if flags.returncode != 0:
        raise GrpcLoadError(
            "grpc++ development files missing (Debian: apt-get install libgrpc++-dev): "
            + flags.stderr.strip()[-300:]
        )
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(f".{os.getpid()}.tmp")
    done = subprocess.run(
        [
            compiler,
            "-O2",
            "-std=c++17",
            "-o",
            str(partial),
            str(CPP_SOURCE),
            *flags.stdout.split(),
            "-lpthread",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise GrpcLoadError(f"building grpc_gen failed: {done.stderr.strip()[-800:]}")
    partial.replace(binary)
    return binary


def pick_engine(engine: str) -> str:
    """The generator that will run: "cpp" or "python" ("auto": cpp if it builds)."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: choose from {', '.join(ENGINES)}")
    if engine != "auto":
        if engine == "cpp":
            cpp_binary()
        return engine
    try:
        cpp_binary()
    except GrpcLoadError:
        return "python"
    return "cpp"
