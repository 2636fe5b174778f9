"""A small, deterministic training loop over in-memory tensors."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm


class Trainable(Protocol):
    """A serving graph that can also compute its training loss."""

    def training_loss(self, inputs: Tensor, targets: Tensor) -> Tensor: ...


@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    description: str = "train"
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None
    """Applied to each training batch's inputs (not to held-out data)."""


def _batches(count: int, batch_size: int, generator: torch.Generator | None) -> list[Tensor]:
    order = torch.randperm(count, generator=generator) if generator else torch.arange(count)
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:  # BatchNorm cannot train on a batch of one
        chunks[-2] = torch.cat([chunks[-2], chunks[-1]])
        chunks.pop()
    return chunks


def mean_loss(model: nn.Module, inputs: Tensor, targets: Tensor, batch_size: int = 256) -> float:
    """Average training loss over a dataset, in eval mode, without gradients."""
    if len(targets) == 0:
        return math.nan
    trainable: Trainable = model  # type: ignore[assignment]
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for index in _batches(len(targets), batch_size, None):
            total += float(trainable.training_loss(inputs[index], targets[index])) * len(index)
    model.train(was_training)
    return total / len(targets)


def predict(model: nn.Module, inputs: Tensor, batch_size: int = 256) -> Tensor:
    """Run the serving forward in eval mode, in chunks."""
    model.eval()
    with torch.no_grad():
        outputs = [model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    return torch.cat(outputs) if outputs else torch.empty(0)


def fit(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    settings: FitSettings,
) -> History:
    """Train with AdamW and a cosine learning-rate decay; record the per-epoch losses."""
    trainable: Trainable = model  # type: ignore[assignment]
    inputs, targets = train
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = len(_batches(len(targets), settings.batch_size, None))
    total_steps = max(1, settings.epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    generator = torch.Generator().manual_seed(settings.seed)
    history = History()
    started = time.perf_counter()
    with tqdm(
        total=total_steps, desc=settings.description, unit="batch", mininterval=0.5
    ) as progress:
        for epoch in range(1, settings.epochs + 1):
            model.train()
            running = 0.0
            for index in _batches(len(targets), settings.batch_size, generator):
                optimizer.zero_grad(set_to_none=True)
                batch = inputs[index]
                if settings.augment is not None:
                    batch = settings.augment(batch, generator)
                loss = trainable.training_loss(batch, targets[index])
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                schedule.step()
                running += float(loss.detach()) * len(index)
                progress.update(1)
            history.train_loss.append(running / len(targets))
            history.test_loss.append(mean_loss(model, *test))
            progress.set_postfix(
                epoch=f"{epoch}/{settings.epochs}",
                train_loss=f"{history.train_loss[-1]:.4f}",
                test_loss=f"{history.test_loss[-1]:.4f}",
                refresh=False,
            )
    history.seconds = time.perf_counter() - started
    model.eval()
    return history
