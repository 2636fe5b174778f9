"""Every default model (`python -m training all`), trained small, for tests of a live gateway."""

from __future__ import annotations

from pathlib import Path

from tests.training.conftest import train
from training.config import MODEL_NAMES

DEFAULT_MODELS = MODEL_NAMES
QUICK = {
    "iris": ("--epochs", "5"),
    "diabetes": ("--epochs", "5"),
    "digits": ("--epochs", "1", "--max-samples", "64"),
    "resnet18": ("--epochs", "1", "--max-samples", "64"),
    "minilm": (),
    "lstm": ("--epochs", "1", "--max-samples", "256"),
    "lstm_stream": (),
}


def train_defaults(store: Path) -> Path:
    """Each default model on a small budget into `store`: same names, tensors and data."""
    for name in DEFAULT_MODELS:
        assert train(name, "--model-store", store, *QUICK[name]) == 0
    return store
