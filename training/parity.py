"""The parity gate: every exported artifact must reproduce eager PyTorch on held-out inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from service.manifest import Artifacts
from training.errors import ParityError
from training.export import quiet_torchscript

TOLERANCE = 1e-4
BATCH_SIZES = (1, 7, 32)

Runner = Callable[[tuple[Tensor, ...]], np.ndarray]


def tiled_batches(inputs: Tensor, sizes: Sequence[int] = BATCH_SIZES) -> list[tuple[Tensor, ...]]:
    """Held-out batches of each size, repeating rows when the split is smaller than a batch."""
    if len(inputs) == 0:
        raise ParityError("parity check needs at least one held-out sample")
    return [(inputs[torch.arange(size) % len(inputs)].contiguous(),) for size in sizes]


def _runners(out_dir: Path, artifacts: Artifacts, input_names: list[str]) -> dict[str, Runner]:
    runners: dict[str, Runner] = {}
    if artifacts.torchscript:
        with quiet_torchscript():
            scripted = torch.jit.load(  # type: ignore[no-untyped-call]
                str(out_dir / artifacts.torchscript), map_location="cpu"
            )

        def run_torchscript(inputs: tuple[Tensor, ...]) -> np.ndarray:
            with quiet_torchscript(), torch.no_grad():
                return scripted(*inputs).numpy()  # type: ignore[no-any-return]

        runners["torchscript"] = run_torchscript
    if artifacts.onnx:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1  # parity batches are small; no thread pool to spin
        session = ort.InferenceSession(
            str(out_dir / artifacts.onnx), options, providers=["CPUExecutionProvider"]
        )

        def run_onnx(inputs: tuple[Tensor, ...]) -> np.ndarray:
            feed = {name: t.numpy() for name, t in zip(input_names, inputs, strict=True)}
            return np.asarray(session.run(None, feed)[0])

        runners["onnx"] = run_onnx
    if artifacts.pt2:
        compiled = torch._inductor.aoti_load_package(str(out_dir / artifacts.pt2))

        def run_pt2(inputs: tuple[Tensor, ...]) -> np.ndarray:
            with torch.no_grad():
                result = compiled(*inputs)
            if isinstance(result, (list, tuple)):
                result = result[0]
            return result.numpy()  # type: ignore[no-any-return]

        runners["pt2"] = run_pt2
    return runners


def check_parity(
    module: nn.Module,
    out_dir: Path,
    artifacts: Artifacts,
    cases: Sequence[tuple[Tensor, ...]],
    input_names: list[str],
    tolerance: float = TOLERANCE,
) -> dict[str, float]:
    """Max-abs difference to eager per format over all cases; raise ParityError past tolerance."""
    module.eval()
    with torch.no_grad():
        expected = [module(*case).numpy() for case in cases]
    worst: dict[str, float] = {}
    for fmt, run in _runners(out_dir, artifacts, input_names).items():
        worst[fmt] = 0.0
        for case, reference in zip(cases, expected, strict=True):
            actual = run(case)
            shapes = ", ".join(f"{list(t.shape)}" for t in case)
            if actual.shape != reference.shape:
                raise ParityError(
                    f"{fmt} output shape {list(actual.shape)} != eager {list(reference.shape)} "
                    f"for inputs {shapes}"
                )
            diff = float(np.max(np.abs(actual.astype(np.float64) - reference)))
            if not np.isfinite(diff) or diff > tolerance:
                raise ParityError(
                    f"{fmt} export differs from eager PyTorch by {diff:.3g} (> {tolerance:g}) "
                    f"on inputs {shapes}"
                )
            worst[fmt] = max(worst[fmt], diff)
    return worst
