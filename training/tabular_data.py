"""Tabular datasets: scikit-learn's iris and diabetes, or a CSV file with a target column."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import train_test_split

from training.errors import TrainingError

TEST_FRACTION = 0.2


@dataclass(frozen=True)
class TabularSplit:
    features: NDArray[np.float32]
    """Raw (unstandardized) features, [N, F]."""
    targets: NDArray[np.int64] | NDArray[np.float32]
    """Class indices (classification) or values (regression), [N]."""

    def __len__(self) -> int:
        return len(self.features)


@dataclass(frozen=True)
class TabularDataset:
    source: str
    feature_names: list[str]
    labels: list[str] | None
    """Class names for classification, None for regression."""
    train: TabularSplit
    test: TabularSplit


def load_tabular(
    *,
    classification: bool,
    csv_path: Path | None,
    target: str | None,
    split_seed: int,
    max_samples: int | None,
) -> TabularDataset:
    """Load the built-in dataset (iris or diabetes) or a CSV, then split it deterministically."""
    if csv_path is None:
        source, names, labels, x, y = _builtin(classification)
    else:
        source, names, labels, x, y = _read_csv(csv_path, target, classification)
    train, test = _split(x, y, classification=classification, seed=split_seed)
    if max_samples is not None:
        train, test = _head(train, max_samples), _head(test, max_samples)
    return TabularDataset(source, names, labels, train, test)


def _builtin(
    classification: bool,
) -> tuple[str, list[str], list[str] | None, NDArray[np.float32], NDArray[np.generic]]:
    if classification:
        from sklearn.datasets import load_iris

        iris = load_iris()
        return (
            "sklearn.datasets.load_iris",
            [str(n) for n in iris.feature_names],
            [str(n) for n in iris.target_names],
            np.asarray(iris.data, dtype=np.float32),
            np.asarray(iris.target, dtype=np.int64),
        )
    from sklearn.datasets import load_diabetes

    diabetes = load_diabetes(scaled=False)  # raw units (age in years, bmi, ...): clients send these
    return (
        "sklearn.datasets.load_diabetes(scaled=False)",
        [str(n) for n in diabetes.feature_names],
        None,
        np.asarray(diabetes.data, dtype=np.float32),
        np.asarray(diabetes.target, dtype=np.float32),
    )


def _read_csv(
    path: Path, target: str | None, classification: bool
) -> tuple[str, list[str], list[str] | None, NDArray[np.float32], NDArray[np.generic]]:
    if not path.is_file():
        raise TrainingError(f"dataset file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TrainingError(f"cannot read CSV {path}: {exc}") from exc
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if len(rows) < 3:
        raise TrainingError(f"CSV {path} needs a header row and at least two data rows")
    header = [cell.strip() for cell in rows[0]]
    target = target or header[-1]
    if target not in header:
        raise TrainingError(f"target column {target!r} not in CSV {path} (columns: {header})")
    if len(header) < 2:
        raise TrainingError(f"CSV {path} has no feature columns besides {target!r}")
    target_index = header.index(target)
    feature_names = [name for i, name in enumerate(header) if i != target_index]
    features = np.empty((len(rows) - 1, len(feature_names)), dtype=np.float32)
    raw_targets: list[str] = []
    for row_number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise TrainingError(
                f"{path}:{row_number}: expected {len(header)} fields, got {len(row)}"
            )
        values = [cell.strip() for cell in row]
        raw_targets.append(values[target_index])
        cells = [v for i, v in enumerate(values) if i != target_index]
        for column, (name, cell) in enumerate(zip(feature_names, cells, strict=True)):
            try:
                features[row_number - 2, column] = float(cell)
            except ValueError:
                raise TrainingError(
                    f"{path}:{row_number}: column {name!r} is not a number: {cell!r}"
                ) from None
    if not np.isfinite(features).all():
        raise TrainingError(f"CSV {path} has missing or infinite feature values")
    source = f"csv:{path} (target={target})"
    if classification:
        labels = sorted(set(raw_targets), key=_label_sort_key)
        index = {label: i for i, label in enumerate(labels)}
        y = np.array([index[t] for t in raw_targets], dtype=np.int64)
        return source, feature_names, labels, features, y
    try:
        values_y = np.array([float(t) for t in raw_targets], dtype=np.float32)
    except ValueError:
        raise TrainingError(f"target column {target!r} must be numeric for regression") from None
    return source, feature_names, None, features, values_y


def _label_sort_key(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _split(
    x: NDArray[np.float32], y: NDArray[np.generic], *, classification: bool, seed: int
) -> tuple[TabularSplit, TabularSplit]:
    stratify = None
    if classification:
        _, counts = np.unique(y, return_counts=True)
        test_rows = int(np.ceil(len(y) * TEST_FRACTION))
        if counts.min() >= 2 and test_rows >= len(counts):
            stratify = y
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=seed, stratify=stratify
    )
    return TabularSplit(x_train, y_train), TabularSplit(x_test, y_test)


def _head(split: TabularSplit, count: int) -> TabularSplit:
    return TabularSplit(split.features[:count], split.targets[:count])
