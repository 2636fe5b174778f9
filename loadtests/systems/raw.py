"""The physical limit: ONNX Runtime called in-process, no server, at growing batch sizes.

Each batch size is measured with intra-op spinning on (ONNX Runtime's default) and off (what the
gateway uses); the limit is the best of all, so it is an upper bound whichever setting wins on
this machine.

Calls timed back to back keep ONNX Runtime's threads and caches hot, which no server's calls are
at c=1: between two of its requests the pool sits idle for at least a round trip. So batch 1 is
also measured paced, each call after an idle gap, the yardstick a c=1 request can be held to.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.drive.payloads import sample_feed
from loadtests.reporting.records import RawPoint
from service.backends.spinning import Spinning
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
    for key, value in Spinning(within_runs=spinning).session_config().items():
        options.add_session_config_entry(key, value)
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
    idle_s: float = 0.0,
) -> RawPoint:
    """Calls timed for `seconds`: back to back, or (`idle_s` > 0) each after sleeping that long,
    when its items/s is that of the calls alone, idle left out."""
    rows = next(iter(feed.values())).shape[0]
    for _ in range(3):
        session.run(outputs, feed)
    durations: list[float] = []
    idles: list[float] = []
    deadline = time.perf_counter() + seconds
    started = previous = time.perf_counter()
    while True:
        if idle_s:
            time.sleep(idle_s)
        before = time.perf_counter()
        session.run(outputs, feed)
        after = time.perf_counter()
        durations.append(after - before)
        idles.append(before - previous)
        previous = after
        if after >= deadline and len(durations) >= 5:
            break
    busy = sum(durations) if idle_s else time.perf_counter() - started
    millis = np.asarray(durations) * 1000.0
    return RawPoint(
        batch=rows,
        calls=len(durations),
        items_per_s=rows * len(durations) / busy,
        p50_ms=float(np.percentile(millis, 50)),
        p99_ms=float(np.percentile(millis, 99)),
        spinning=spinning,
        round=round_,
        idle_gap_ms=round(float(np.median(idles)) * 1000.0, 4) if idle_s else 0.0,
    )


def measure(
    version_dir: Path,
    batches: list[int],
    seconds_per_batch: float,
    device: str = "cpu",
    round_: int | str = 1,
    idle_ms: float = 0.0,
) -> list[RawPoint]:
    """Items/s and per-call latency per batch size and spinning setting, the servers' inputs;
    `round_` tags the points (1, 2, or 'formed' for the batch sizes a server formed). With
    `idle_ms` > 0 and batch 1 among `batches`, batch 1 is measured paced too, each call after
    that much idle."""
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
        if idle_ms > 0 and 1 in feeds:
            points.append(
                measure_batch(
                    session, feeds[1], seconds_per_batch, outputs, spinning, round_, idle_ms / 1e3
                )
            )
        del session
    return points
