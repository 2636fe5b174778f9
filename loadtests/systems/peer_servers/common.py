"""Shared by the peer servers: read a model version directory, open an ONNX Runtime session."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
CPU = ["CPUExecutionProvider"]
CUDA = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@dataclass
class OnnxModel:
    name: str
    manifest: dict[str, Any]
    session: Any
    output_names: list[str]

    @property
    def max_batch_size(self) -> int:
        return int(self.manifest.get("batching", {}).get("max_batch_size", 32))

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(self.output_names, feed)
        return dict(zip(self.output_names, results, strict=True))


def latest_version(store: Path, name: str) -> Path:
    versions = sorted(
        (p for p in (store / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    if not versions:
        raise FileNotFoundError(f"no versions of {name} under {store}")
    return versions[-1]


def open_model(store: Path, name: str, device: str = "cpu") -> OnnxModel:
    import onnxruntime as ort

    directory = latest_version(store, name)
    manifest = json.loads((directory / "model.json").read_text())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 0
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    wanted = CUDA if device == "cuda" else CPU
    providers = [p for p in wanted if p in ort.get_available_providers()] or CPU
    onnx_file = manifest.get("artifacts", {}).get("onnx") or "model.onnx"
    session = ort.InferenceSession(
        str(directory / onnx_file), sess_options=options, providers=providers
    )
    outputs = [spec["name"] for spec in manifest["outputs"]]
    return OnnxModel(name, manifest, session, outputs)
