"""Process-wide setup: seeds, threads, versions, timestamps."""

from __future__ import annotations

import os
import platform
import random
from datetime import UTC, datetime
from importlib import metadata

import numpy as np
import torch

PROVENANCE_PACKAGES = (
    "torch",
    "torchvision",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "scikit-learn",
    "numpy",
    "pillow",
)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a run with the same seed repeats."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_threads() -> int:
    """Use every core this process may run on for intra-op work; return that count."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores))
    return torch.get_num_threads()


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the packages that shaped an artifact (absent ones are skipped)."""
    versions = {"python": platform.python_version()}
    for name in (*PROVENANCE_PACKAGES, *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def utc_timestamp() -> str:
    """The current time as an ISO-8601 UTC string, to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()
