"""Reader for the CIFAR-10 "python version" batches (`cifar-10-batches-py/`).

torchvision's CIFAR10 insists on the md5 sums of the official files, so any other file in that
format (a subset, a re-packed copy) cannot load through it. This reader accepts any file in the
format and unpickles with an allow-list: only the NumPy array reconstruction the format needs.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from training.errors import TrainingError

BASE_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
META_FILE = "batches.meta"

_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except the few that rebuild NumPy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("numpy.core"):  # files pickled with NumPy 1.x
            module = "numpy._core" + module.removeprefix("numpy.core")
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


@dataclass(frozen=True)
class CifarSplit:
    images: NDArray[np.uint8]
    """[N, 3, 32, 32], RGB."""
    labels: NDArray[np.int64]


def _load_pickle(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainingError(f"CIFAR-10 file missing: {path}")
    try:
        with path.open("rb") as handle:
            content = _ArrayOnlyUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise TrainingError(f"not a CIFAR-10 batch file: {path} ({exc})") from exc
    if not isinstance(content, dict):
        raise TrainingError(f"not a CIFAR-10 batch file: {path} (expected a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in content.items()}


def read_batches(folder: Path, names: tuple[str, ...]) -> CifarSplit:
    """Concatenate the named batch files of `folder`."""
    images: list[NDArray[np.uint8]] = []
    labels: list[int] = []
    for name in names:
        path = folder / name
        batch = _load_pickle(path)
        if "data" not in batch or "labels" not in batch:
            raise TrainingError(f"not a CIFAR-10 batch file: {path} (needs 'data' and 'labels')")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch["labels"]):
            raise TrainingError(f"not a CIFAR-10 batch file: {path} (bad data shape {data.shape})")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.extend(int(label) for label in batch["labels"])
    return CifarSplit(np.concatenate(images), np.asarray(labels, dtype=np.int64))


def read_label_names(folder: Path) -> list[str]:
    meta = _load_pickle(folder / META_FILE)
    names = meta.get("label_names")
    if not isinstance(names, list) or not names:
        raise TrainingError(f"{folder / META_FILE} has no label_names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def read_cifar10(root: Path) -> tuple[CifarSplit, CifarSplit, list[str]]:
    """Read train, test and label names from `root/cifar-10-batches-py`."""
    folder = root / BASE_FOLDER
    if not folder.is_dir():
        raise TrainingError(f"CIFAR-10 not found: {folder} does not exist (pass --download?)")
    label_names = read_label_names(folder)
    train = read_batches(folder, TRAIN_BATCHES)
    test = read_batches(folder, TEST_BATCHES)
    for split in (train, test):
        if split.labels.size and (split.labels.min() < 0 or split.labels.max() >= len(label_names)):
            raise TrainingError(f"CIFAR-10 labels in {folder} exceed the {len(label_names)} names")
    return train, test, label_names
