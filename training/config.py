"""Model names, their default recipes, and the options of one run."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

MODEL_NAMES = ("iris", "diabetes", "digits", "resnet18", "minilm", "lstm", "lstm_stream")
IMAGE_DATASETS = ("digits", "fashionmnist", "cifar10", "imagefolder")
DEFAULT_STORE = Path("model_store")
DEFAULT_SPLIT_SEED = 42
"""Seed of the held-out split: fixed, so changing --seed changes training, not the test set."""


@dataclass(frozen=True)
class Recipe:
    """Default hyper-parameters of one model, tuned to meet the quality floors on 2 CPU cores."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    max_batch_size: int
    """Suggested largest batch for the server (manifest `batching.max_batch_size`)."""
    image_size: int | None = None


RECIPES: dict[str, Recipe] = {
    "iris": Recipe(epochs=100, batch_size=16, lr=1e-2, weight_decay=1e-4, max_batch_size=64),
    "diabetes": Recipe(epochs=40, batch_size=32, lr=3e-4, weight_decay=1e-2, max_batch_size=64),
    "digits": Recipe(
        epochs=15, batch_size=64, lr=3e-3, weight_decay=1e-4, max_batch_size=64, image_size=28
    ),
    "resnet18": Recipe(
        epochs=3, batch_size=64, lr=2e-3, weight_decay=1e-4, max_batch_size=32, image_size=32
    ),
    "minilm": Recipe(epochs=0, batch_size=32, lr=0.0, weight_decay=0.0, max_batch_size=32),
    "lstm": Recipe(epochs=40, batch_size=64, lr=3e-3, weight_decay=1e-4, max_batch_size=64),
    # Trains nothing: the windowed lstm's network as a step model (training/stream.py).
    "lstm_stream": Recipe(epochs=0, batch_size=1, lr=0.0, weight_decay=0.0, max_batch_size=64),
}
DEFAULT_WINDOW = 30
"""Past values the forecaster reads (lstm `--window`)."""
DEFAULT_HORIZON = 1
"""Future values it forecasts (lstm `--horizon`)."""


@dataclass(frozen=True)
class RunOptions:
    """Everything one `python -m training <model>` run needs; None means the recipe default."""

    model: str
    model_store: Path = DEFAULT_STORE
    name: str | None = None
    version: int | None = None
    missing: bool = False
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    split_seed: int = DEFAULT_SPLIT_SEED
    pt2: bool = False
    max_samples: int | None = None
    image_size: int | None = None
    dataset: str | None = None
    data: Path | None = None
    target: str | None = None
    download: bool = False
    weights: Path | None = None
    freeze: bool = False
    window: int = DEFAULT_WINDOW
    horizon: int = DEFAULT_HORIZON
    season: int | None = None
    date_column: str | None = None
    value_column: str | None = None
    source: str = "lstm"
    """lstm_stream: the windowed forecaster (store name) whose network it streams."""

    @property
    def recipe(self) -> Recipe:
        return RECIPES[self.model]

    @property
    def resolved_epochs(self) -> int:
        return self.recipe.epochs if self.epochs is None else self.epochs

    @property
    def resolved_batch_size(self) -> int:
        return self.recipe.batch_size if self.batch_size is None else self.batch_size

    @property
    def resolved_lr(self) -> float:
        return self.recipe.lr if self.lr is None else self.lr

    @property
    def resolved_image_size(self) -> int:
        size = self.image_size or self.recipe.image_size
        if size is None:
            raise ValueError(f"{self.model} is not an image model")
        return size

    @property
    def resolved_dataset(self) -> str:
        """The dataset key: `digits` for image models by default, `csv` when given a file."""
        if self.model in ("digits", "resnet18"):
            return self.dataset or "digits"
        if self.model in ("iris", "diabetes", "lstm"):
            return "csv" if self.data is not None else "builtin"
        return "builtin"

    @property
    def store_name(self) -> str:
        """Directory name in the store: the model name, suffixed when trained on other data."""
        if self.name is not None:
            return self.name
        dataset = self.resolved_dataset
        if dataset in ("builtin", "digits"):
            return self.model
        if dataset in ("csv", "imagefolder") and self.data is not None:
            stem = self.data.stem if dataset == "csv" else self.data.resolve().name
            return f"{self.model}-{slug(stem)}"
        return f"{self.model}-{dataset}"

    def for_model(self, model: str) -> RunOptions:
        """The same options for another model (used by `all`)."""
        return replace(self, model=model)


STORE_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
"""What the manifest accepts as a model name."""


def slug(text: str) -> str:
    """A store-safe name: lower case letters, digits, `_` and `-`."""
    cleaned = re.sub(r"[^a-z0-9_\-]+", "-", text.lower()).strip("-_")
    return cleaned or "data"
