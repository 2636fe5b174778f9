"""The model manifest (`model_store/<name>/<version>/model.json`).

Training writes it; the gateway, the TorchServe handlers and the benchmarks read it. It is the one
description of a servable model: its task, tensors, labels, preprocessing and provenance.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "model.json"
SCHEMA_VERSION = 1

Datatype = Literal[
    "BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"
]


class Task(StrEnum):
    TABULAR_CLASSIFICATION = "tabular_classification"
    TABULAR_REGRESSION = "tabular_regression"
    IMAGE_CLASSIFICATION = "image_classification"
    TEXT_EMBEDDING = "text_embedding"
    TIME_SERIES_FORECASTING = "time_series_forecasting"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One graph input or output, in Open Inference Protocol terms."""

    name: str
    datatype: Datatype
    shape: list[int]
    """-1 marks a dynamic dimension; the first dimension is always the batch (-1)."""


class Signature(Protocol):
    """What a backend needs of a model: its name and version (logs, thread names) and its
    tensors. Our manifests and Triton configurations both have it."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int | str: ...

    @property
    def inputs(self) -> Sequence[TensorSpec]: ...

    @property
    def outputs(self) -> Sequence[TensorSpec]: ...


class ValueRange(_Strict):
    """The smallest and largest value seen in the training split, in the raw units."""

    min: float
    max: float


class TabularPreprocessing(_Strict):
    kind: Literal["tabular"] = "tabular"
    feature_names: list[str]
    """Column order the model expects; clients may send a dict keyed by these names."""
    standardization_in_graph: bool = True
    """The fitted mean/std is part of the graph, so clients send raw features."""
    feature_ranges: list[ValueRange] | None = None
    """Training-split range of each feature, in `feature_names` order and raw units: what a
    client should send (diabetes' `age` is in years, `bmi` in kg/m², ...)."""
    target_range: ValueRange | None = None
    """Training-split range of a regression target, in its units."""


class ImagePreprocessing(_Strict):
    kind: Literal["image"] = "image"
    height: int
    width: int
    channels: Literal[1, 3]
    layout: Literal["NCHW"] = "NCHW"
    """Images enter the graph as UINT8 in this layout; the graph scales to [0, 1] and normalizes."""
    mean: list[float]
    std: list[float]
    """Per-channel normalization applied inside the graph after scaling to [0, 1]."""
    invert: bool = False
    """Invert decoded uploads (255 - pixel) before the graph, for a model trained on the opposite
    polarity to what clients upload. The default digits model takes bright ink on dark, like
    its training data (and MNIST), so it leaves this off."""


class TextPreprocessing(_Strict):
    kind: Literal["text"] = "text"
    tokenizer: str
    """Tokenizer file (Hugging Face `tokenizers` JSON), relative to the version directory."""
    max_length: int
    """Longer texts are truncated to this many tokens."""
    pooling: Literal["mean"] = "mean"
    normalized: bool = True


class SeriesPreprocessing(_Strict):
    """A univariate time series: the graph takes the last `window` values, oldest first."""

    kind: Literal["series"] = "series"
    window: int = Field(ge=1)
    """Past values per forecast; the input tensor is FP32 [-1, window, 1]."""
    horizon: int = Field(ge=1)
    """Future values per forecast; the output tensor is FP32 [-1, horizon]."""
    frequency: str | None = None
    """Spacing of the series (a pandas offset alias such as `W-SAT`), when known."""
    season: int | None = None
    """Steps per season, used by the seasonal-naive baseline (52 for weekly data)."""
    normalization_in_graph: bool = True
    """The fitted scaling is part of the graph, so clients send raw values."""
    value_range: ValueRange | None = None
    """Training-split range of the series, in its units."""


Preprocessing = Annotated[
    TabularPreprocessing | ImagePreprocessing | TextPreprocessing | SeriesPreprocessing,
    Field(discriminator="kind"),
]


class Artifacts(_Strict):
    """File names relative to the version directory; None when that format was not exported."""

    onnx: str | None = "model.onnx"
    torchscript: str | None = "model.pt"
    pt2: str | None = None


class Batching(_Strict):
    max_batch_size: int = Field(default=32, ge=1)
    """Suggested largest batch (rows) the server should form for this model."""


class Provenance(_Strict):
    dataset: str
    seed: int | None = None
    epochs: int | None = None
    packages: dict[str, str] = Field(default_factory=dict)
    created: str
    """ISO-8601 UTC timestamp of the export."""
    notes: list[str] = Field(default_factory=list)


class Manifest(_Strict):
    schema_version: Literal[1] = 1
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    version: int = Field(ge=1)
    task: Task
    platform: str = "pytorch"
    """Where the model came from; artifacts say which runtimes can serve it."""
    inputs: list[TensorSpec]
    """Graph inputs, in the order the graph takes them."""
    outputs: list[TensorSpec]
    """Graph outputs; classifiers output `probabilities` (softmax is in the graph)."""
    labels: list[str] | None = None
    preprocessing: Preprocessing
    batching: Batching = Batching()
    artifacts: Artifacts = Artifacts()
    metrics: dict[str, float] = Field(default_factory=dict)
    """Held-out evaluation figures (accuracy, macro_f1, mse, mae, r2, ...)."""
    parity: dict[str, float] = Field(default_factory=dict)
    """Measured max-abs difference to eager PyTorch per exported format (or cosine for text)."""
    provenance: Provenance

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Read `model.json` from a version directory or the file itself."""
        file = path / MANIFEST_FILE if path.is_dir() else path
        return cls.model_validate_json(file.read_bytes())

    def write(self, version_dir: Path) -> Path:
        file = version_dir / MANIFEST_FILE
        file.write_text(self.model_dump_json(indent=2) + "\n")
        return file
