"""Held-out metrics, `metrics.json`, and the PNG figures (Agg, no display needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray

from training.loop import History


def classification_metrics(
    probabilities: NDArray[np.float32], targets: NDArray[np.int64], num_classes: int
) -> tuple[dict[str, float], NDArray[np.int64]]:
    """Accuracy, macro F1 and the confusion matrix (rows: true class, columns: predicted)."""
    from sklearn.metrics import confusion_matrix, f1_score

    predicted = probabilities.argmax(axis=1)
    classes = list(range(num_classes))
    matrix = confusion_matrix(targets, predicted, labels=classes)
    metrics = {
        "accuracy": float(np.mean(predicted == targets)),
        "macro_f1": float(
            f1_score(targets, predicted, labels=classes, average="macro", zero_division=0)
        ),
    }
    return metrics, matrix.astype(np.int64)


def regression_metrics(
    predictions: NDArray[np.float32], targets: NDArray[np.float32]
) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    mse = float(mean_squared_error(targets, predictions))
    r2 = float(r2_score(targets, predictions)) if len(targets) > 1 else float("nan")
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(mean_absolute_error(targets, predictions)),
        "r2": r2,
    }


def plot_loss_curve(history: History, path: Path, title: str) -> None:
    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.add_subplot()
    epochs = np.arange(1, len(history.train_loss) + 1)
    marker = "o" if len(epochs) <= 20 else None
    axes.plot(epochs, history.train_loss, label="train", marker=marker)
    axes.plot(epochs, history.test_loss, label="held-out", marker=marker)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def plot_confusion_matrix(
    matrix: NDArray[np.int64], labels: list[str], path: Path, title: str
) -> None:
    size = max(4.0, 0.5 * len(labels) + 2.5)
    figure = Figure(figsize=(size + 1, size), dpi=100)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels, rotation=45, ha="right")
    axes.set_yticks(ticks, labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        color = "white" if count > threshold else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=color, fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def plot_pred_vs_actual(
    predictions: NDArray[np.float32], targets: NDArray[np.float32], path: Path, title: str
) -> None:
    figure = Figure(figsize=(5, 5), dpi=100)
    axes = figure.add_subplot()
    axes.scatter(targets, predictions, s=12, alpha=0.7)
    if len(targets):
        low = float(min(targets.min(), predictions.min()))
        high = float(max(targets.max(), predictions.max()))
        axes.plot([low, high], [low, high], color="gray", linestyle="--", label="ideal")
        axes.legend()
    axes.set_xlabel("actual")
    axes.set_ylabel("predicted")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)


def plot_forecast(
    actual: NDArray[np.float32],
    forecast: NDArray[np.float32],
    path: Path,
    title: str,
    baseline: NDArray[np.float32] | None = None,
    unit: str = "value",
) -> None:
    """The held-out tail: actual values and the one-step-ahead forecasts, against time step."""
    figure = Figure(figsize=(9, 4), dpi=100)
    axes = figure.add_subplot()
    steps = np.arange(len(actual))
    axes.plot(steps, actual, label="actual", color="black", linewidth=1.2)
    axes.plot(steps, forecast, label="LSTM forecast", linewidth=1.0)
    if baseline is not None:
        axes.plot(steps, baseline, label="seasonal naive", linewidth=0.8, alpha=0.6)
    axes.set_xlabel("held-out step")
    axes.set_ylabel(unit)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
