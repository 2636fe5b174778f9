"""Helpers for the training tests: in-process and subprocess runs, tiny on-disk datasets."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.manifest import Manifest
from training.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]

# As `python -m training` does: idle OpenMP threads sleep rather than spin (read when torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def train(*args: str | Path) -> int:
    """Run `python -m training ARGS` in this process (user errors raise TrainingError)."""
    return main([str(a) for a in args])


def run_module(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run `python -m training ARGS` in a fresh interpreter, as a user would."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "training", *(str(a) for a in args)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def version_dir(store: Path, name: str, version: int = 1) -> Path:
    return store / name / str(version)


def read_manifest(store: Path, name: str, version: int = 1) -> Manifest:
    return Manifest.read(version_dir(store, name, version))


def _idx(path: Path, array: np.ndarray) -> None:
    """Write `array` as uint8 in the big-endian IDX format of the MNIST family (not gzipped)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_fashionmnist(root: Path, train: int = 24, test: int = 12, seed: int = 0) -> Path:
    """The four unpacked files torchvision's FashionMNIST reads: ROOT/FashionMNIST/raw/*-ubyte."""
    rng = np.random.default_rng(seed)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", train), ("t10k", test)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(count) % 10)
    return root


def cifar_rows(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 4) -> Path:
    """CIFAR-10 "python version" batches under ROOT/cifar-10-batches-py/ (pickle protocol 2)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]
    for seed, name in enumerate([*names, "test_batch"]):
        batch = {
            "batch_label": name,
            "labels": [(seed + i) % 10 for i in range(per_batch)],
            "data": cifar_rows(per_batch, seed),
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {
        "label_names": [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ],
        "num_cases_per_batch": per_batch,
        "num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def write_image_folder(
    root: Path,
    classes: Sequence[str] = ("pizza", "steak", "sushi"),
    per_class: int = 5,
    size: tuple[int, int] = (40, 30),
    mode: str = "RGB",
) -> Path:
    """PNG files in one folder per class, like pizza_steak_sushi/train."""
    rng = np.random.default_rng(len(classes) * per_class)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            pixels = rng.integers(0, 256, shape, dtype=np.uint8) // (index + 1)  # darker per class
            Image.fromarray(pixels, mode=mode).save(folder / f"{name}_{i}.png")
    return root


@pytest.fixture
def model_store(tmp_path: Path) -> Path:
    return tmp_path / "model_store"


@pytest.fixture
def one_line_error() -> Callable[[subprocess.CompletedProcess[str]], str]:
    """Assert a process failed with exactly one stderr line and no traceback; return it."""

    def check(result: subprocess.CompletedProcess[str]) -> str:
        assert result.returncode != 0, result.stdout
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert "Traceback" not in result.stderr
        return lines[0]

    return check
