"""The physical limit: ONNX Runtime called in-process, no server, at growing batch sizes.

Each batch size is measured with intra-op spinning on (ONNX Runtime's default) and off (what the
gateway uses); the limit is the best of all, so it is an upper bound whichever setting wins on
this machine.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.drive.payloads import sample_feed
from loadtests.reporting.records import RawPoint
from service.manifest import Manifest

CPU = ["CPUExecutionProvider"]
CUDA = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def providers_for(device: str) -> list[str]:
    return CUDA if device == "cuda" else CPU


def open_session(model_path: Path, device: str = "cpu", spinning: bool = True) -> Any:
    """An InferenceSession with ONNX Runtime's defaults (intra-op threads = cores, spinning on
    unless told otherwise) and full graph optimization: the plain setup the peers use too."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 0
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    available = ort.get_available_providers()
    chosen = [p for p in providers_for(device) if p in available] or CPU
    return ort.InferenceSession(str(model_path), sess_options=options, providers=chosen)


def measure_batch(
    session: Any,
    feed: dict[str, np.ndarray],
    seconds: float,
    outputs: list[str],
    spinning: bool,
    round_: int | str = 1,
) -> RawPoint:
    rows = next(iter(feed.values())).shape[0]
    for _ in range(3):
        session.run(outputs, feed)
    durations: list[float] = []
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while True:
        before = time.perf_counter()
        session.run(outputs, feed)
        after = time.perf_counter()
        durations.append(after - before)
        if after >= deadline and len(durations) >= 5:
            break
    elapsed = time.perf_counter() - started
    millis = np.asarray(durations) * 1000.0
    return RawPoint(
        batch=rows,
        calls=len(durations),
        items_per_s=rows * len(durations) / elapsed,
        p50_ms=float(np.percentile(millis, 50)),
        p99_ms=float(np.percentile(millis, 99)),
        spinning=spinning,
        round=round_,
    )


def measure(
    version_dir: Path,
    batches: list[int],
    seconds_per_batch: float,
    device: str = "cpu",
    round_: int | str = 1,
) -> list[RawPoint]:
    """Items/s and per-call latency per batch size and spinning setting, the servers' inputs;
    `round_` tags the points (1, 2, or 'formed' for the batch sizes a server formed)."""
    manifest = Manifest.read(version_dir)
    assert manifest.artifacts.onnx is not None, f"{manifest.name} has no ONNX file"
    outputs = [spec.name for spec in manifest.outputs]
    feeds = {batch: sample_feed(manifest, version_dir, batch) for batch in batches}
    points = []
    for spinning in (True, False):
        session = open_session(version_dir / manifest.artifacts.onnx, device, spinning)
        for batch in batches:
            points.append(
                measure_batch(session, feeds[batch], seconds_per_batch, outputs, spinning, round_)
            )
        del session
    return points
