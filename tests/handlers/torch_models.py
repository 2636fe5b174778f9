"""Tiny TorchScript twins of the tiny ONNX models: same weights, same graph, both artifacts.

Each store entry gets `model.onnx` (from tests.tiny_models) and `model.pt` (a traced module
computing the same function), so TorchServe answers can be checked against ONNX Runtime.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from service.manifest import Artifacts, Manifest
from tests import tiny_models

TASK_MODELS = ("tab", "reg", "img", "txt", "fc")


class TabularClassifier(nn.Module):
    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        weight, bias = tiny_models.tabular_weights(features, classes)
        self.weight = nn.Parameter(torch.from_numpy(weight), requires_grad=False)
        self.bias = nn.Parameter(torch.from_numpy(bias), requires_grad=False)

    def forward(self, features: Tensor) -> Tensor:
        return torch.softmax(features @ self.weight + self.bias, dim=-1)


class Regressor(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        weight = torch.arange(1, features + 1, dtype=torch.float32).reshape(features, 1)
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, features: Tensor) -> Tensor:
        return features @ self.weight


class ImageClassifier(nn.Module):
    def __init__(self, size: int, classes: int) -> None:
        super().__init__()
        weight = tiny_models.image_weights(size * size, classes)
        self.weight = nn.Parameter(torch.from_numpy(weight), requires_grad=False)

    def forward(self, images: Tensor) -> Tensor:
        flat = images.float().flatten(1)
        return torch.softmax(flat @ self.weight, dim=-1)


class TextEmbedder(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        table = tiny_models.embedding_table(dim)
        self.table = nn.Parameter(torch.from_numpy(table), requires_grad=False)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        mask = attention_mask.float().unsqueeze(2)
        summed = (self.table[input_ids] * mask).sum(dim=1)
        mean = summed / mask.sum(dim=1)
        return mean / mean.norm(dim=-1, keepdim=True)


class Forecaster(nn.Module):
    def __init__(self, window: int, horizon: int) -> None:
        super().__init__()
        weight = tiny_models.forecaster_weights(window, horizon)
        self.weight = nn.Parameter(torch.from_numpy(weight), requires_grad=False)

    def forward(self, series: Tensor) -> Tensor:
        return series.flatten(1) @ self.weight


def _save_traced(module: nn.Module, example: tuple[Tensor, ...], directory: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated but still the artifact
        traced = torch.jit.trace(module.eval(), example)
    traced.save(str(directory / "model.pt"))  # type: ignore[no-untyped-call]
    manifest = Manifest.read(directory)
    manifest.model_copy(
        update={"artifacts": Artifacts(onnx="model.onnx", torchscript="model.pt")}
    ).write(directory)


def classifier(store: Path, name: str = "tab", features: int = 4, classes: int = 3) -> Path:
    directory = tiny_models.classifier(store, name=name, features=features, classes=classes)
    _save_traced(TabularClassifier(features, classes), (torch.zeros(2, features),), directory)
    return directory


def regressor(store: Path, name: str = "reg", features: int = 3) -> Path:
    directory = tiny_models.regressor(store, name=name, features=features)
    _save_traced(Regressor(features), (torch.zeros(2, features),), directory)
    return directory


def image_classifier(store: Path, name: str = "img", size: int = 8, classes: int = 10) -> Path:
    directory = tiny_models.image_classifier(store, name=name, size=size, classes=classes)
    example = torch.zeros(2, 1, size, size, dtype=torch.uint8)
    _save_traced(ImageClassifier(size, classes), (example,), directory)
    return directory


def text_embedder(store: Path, name: str = "txt", dim: int = 6) -> Path:
    directory = tiny_models.text_embedder(store, name=name, dim=dim)
    ids = torch.tensor([[2, 3, 0], [4, 0, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    _save_traced(TextEmbedder(dim), (ids, mask), directory)
    return directory


def forecaster(store: Path, name: str = "fc", window: int = 5, horizon: int = 2) -> Path:
    directory = tiny_models.forecaster(store, name=name, window=window, horizon=horizon)
    _save_traced(Forecaster(window, horizon), (torch.zeros(2, window, 1),), directory)
    return directory


def full_store(store: Path) -> Path:
    """One TorchScript + ONNX model of every task: tab, reg, img, txt, fc."""
    classifier(store)
    regressor(store)
    image_classifier(store)
    text_embedder(store)
    forecaster(store)
    return store
