"""The physical limit: ONNX Runtime called in-process, no server, at growing batch sizes."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.payloads import sample_feed
from service.manifest import Manifest

CPU = ["CPUExecutionProvider"]
CUDA = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def providers_for(device: str) -> list[str]:
    return CUDA if device == "cuda" else CPU


@dataclass(frozen=True)
class RawPoint:
    batch: int
    calls: int
    items_per_s: float
    p50_ms: float
    p99_ms: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def open_session(model_path: Path, device: str = "cpu") -> Any:
    """An InferenceSession set up as the gateway sets up its own (threads, optimization)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 0
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = ort.get_available_providers()
    chosen = [p for p in providers_for(device) if p in available] or CPU
    return ort.InferenceSession(str(model_path), sess_options=options, providers=chosen)


def measure_batch(session: Any, feed: dict[str, np.ndarray], seconds: float,
                  outputs: list[str]) -> RawPoint:
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
    )


def measure(version_dir: Path, batches: list[int], seconds_per_batch: float,
            device: str = "cpu") -> list[RawPoint]:
    """Items/s and per-call latency for each batch size, one session, the same inputs as servers."""
    manifest = Manifest.read(version_dir)
    assert manifest.artifacts.onnx is not None, f"{manifest.name} has no ONNX file"
    session = open_session(version_dir / manifest.artifacts.onnx, device)
    outputs = [spec.name for spec in manifest.outputs]
    return [
        measure_batch(session, sample_feed(manifest, version_dir, batch), seconds_per_batch,
                      outputs)
        for batch in batches
    ]
