"""The raw torch limit: a model file called in-process, no server, at given batch sizes, through
the same `TorchModule` (device copies, fp16 autocast) the gateway's torch backends use; inputs
are placed on the device once, so the figure is the module's compute alone."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.manifest import Manifest

WARMUP_CALLS = 3


@dataclass(frozen=True)
class RawTorchPoint:
    batch: int
    calls: int
    items_per_s: float
    p50_ms: float
    mean_ms: float


def open_module(version_dir: Path, backend: str, device: str) -> Any:
    """The version's TorchScript (`torchscript`) or AOTInductor (`pt2`) module on `device`."""
    import torch

    manifest = Manifest.read(version_dir)
    file = manifest.artifacts.torchscript if backend == "torchscript" else manifest.artifacts.pt2
    if file is None:
        raise FileNotFoundError(f"{manifest.name} has no {backend} artifact")
    if backend == "pt2":
        return torch._inductor.aoti_load_package(str(version_dir / file))
    from training.export import quiet_torchscript

    with quiet_torchscript():
        module = torch.jit.load(str(version_dir / file), map_location=torch.device(device))  # type: ignore[no-untyped-call]
    return module.eval()


def measure(
    module: Any,
    manifest: Manifest,
    row: dict[str, np.ndarray],
    batches: list[int],
    seconds: float,
    device: str,
    *,
    fp16: bool,
) -> list[RawTorchPoint]:
    """Calls back to back for `seconds` per batch size, after unrecorded ones (at least
    `WARMUP_CALLS`, for a quarter of `seconds`)."""
    import torch

    from service.backends.torch_module import TorchModule

    runner = TorchModule(module, manifest, torch.device(device), fp16=fp16)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    points = []
    for batch in batches:
        args = runner.inputs({name: np.repeat(array, batch, axis=0) for name, array in row.items()})
        warming = time.perf_counter()  # TorchScript profiles the first calls of a shape
        for call in itertools.count():
            runner.forward(args)
            sync()
            if call >= WARMUP_CALLS and time.perf_counter() - warming > seconds / 4:
                break
        times: list[float] = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            called = time.perf_counter()
            runner.forward(args)
            sync()
            times.append(time.perf_counter() - called)
        total = sum(times)
        points.append(
            RawTorchPoint(
                batch=batch,
                calls=len(times),
                items_per_s=round(batch * len(times) / total, 1),
                p50_ms=round(float(np.median(times)) * 1000, 3),
                mean_ms=round(total / len(times) * 1000, 3),
            )
        )
    return points
