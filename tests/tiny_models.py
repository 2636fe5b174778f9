"""Tiny ONNX models built with onnx.helper (no torch), in the layout training writes.

They follow the tensor-naming contract of real models, so the gateway sees the same thing it
sees in production, in milliseconds.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, pre_tokenizers

from service.manifest import (
    Artifacts,
    Batching,
    ImagePreprocessing,
    Manifest,
    Provenance,
    SeriesPreprocessing,
    TabularPreprocessing,
    Task,
    TensorSpec,
    TextPreprocessing,
)

OPSET = [helper.make_opsetid("", 17)]
RNG_SEED = 7
WORDS = ["[PAD]", "[UNK]", "hello", "world", "serving", "models", "fast", "batch", "a", "b"]


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _provenance() -> Provenance:
    return Provenance(
        dataset="synthetic", seed=RNG_SEED, created=dt.datetime.now(dt.UTC).isoformat()
    )


def _write(store: Path, manifest: Manifest, graph: onnx.GraphProto) -> Path:
    directory = store / manifest.name / str(manifest.version)
    directory.mkdir(parents=True, exist_ok=True)
    _save(graph, directory / "model.onnx")
    manifest.write(directory)
    return directory


def tabular_weights(features: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(RNG_SEED)
    return (
        rng.normal(size=(features, classes)).astype(np.float32),
        rng.normal(size=(classes,)).astype(np.float32),
    )


def classifier(
    store: Path,
    name: str = "tab",
    version: int = 1,
    features: int = 4,
    classes: int = 3,
    max_batch: int = 8,
) -> Path:
    weight, bias = tabular_weights(features, classes)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["logits0"]),
            helper.make_node("Add", ["logits0", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")],
    )
    manifest = Manifest(
        name=name,
        version=version,
        task=Task.TABULAR_CLASSIFICATION,
        inputs=[TensorSpec(name="features", datatype="FP32", shape=[-1, features])],
        outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, classes])],
        labels=[f"class_{i}" for i in range(classes)],
        preprocessing=TabularPreprocessing(feature_names=[f"f{i}" for i in range(features)]),
        batching=Batching(max_batch_size=max_batch),
        artifacts=Artifacts(onnx="model.onnx", torchscript=None),
        provenance=_provenance(),
    )
    return _write(store, manifest, graph)


def regressor(store: Path, name: str = "reg", features: int = 3) -> Path:
    weight = np.arange(1, features + 1, dtype=np.float32).reshape(features, 1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["prediction"])],
        name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(weight, "W")],
    )
    manifest = Manifest(
        name=name,
        version=1,
        task=Task.TABULAR_REGRESSION,
        inputs=[TensorSpec(name="features", datatype="FP32", shape=[-1, features])],
        outputs=[TensorSpec(name="prediction", datatype="FP32", shape=[-1, 1])],
        preprocessing=TabularPreprocessing(feature_names=[f"x{i}" for i in range(features)]),
        artifacts=Artifacts(onnx="model.onnx", torchscript=None),
        provenance=_provenance(),
    )
    return _write(store, manifest, graph)


def image_weights(pixels: int, classes: int) -> np.ndarray:
    return np.random.default_rng(RNG_SEED).normal(size=(pixels, classes)).astype(np.float32) / 255


def image_classifier(store: Path, name: str = "img", size: int = 8, classes: int = 10) -> Path:
    pixels = size * size
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        name,
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 1, size, size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])],
        [
            numpy_helper.from_array(image_weights(pixels, classes), "W"),
            numpy_helper.from_array(np.array([-1, pixels], dtype=np.int64), "flat_shape"),
        ],
    )
    manifest = Manifest(
        name=name,
        version=1,
        task=Task.IMAGE_CLASSIFICATION,
        inputs=[TensorSpec(name="images", datatype="UINT8", shape=[-1, 1, size, size])],
        outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, classes])],
        labels=[str(i) for i in range(classes)],
        preprocessing=ImagePreprocessing(
            height=size, width=size, channels=1, mean=[0.0], std=[1.0]
        ),
        batching=Batching(max_batch_size=16),
        artifacts=Artifacts(onnx="model.onnx", torchscript=None),
        provenance=_provenance(),
    )
    return _write(store, manifest, graph)


def embedding_table(dim: int) -> np.ndarray:
    return np.random.default_rng(RNG_SEED).normal(size=(len(WORDS), dim)).astype(np.float32)


def text_embedder(store: Path, name: str = "txt", dim: int = 6) -> Path:
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "input_ids"], ["tokens"]),
            helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
            helper.make_node("Mul", ["tokens", "mask3"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
            helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
            helper.make_node("Div", ["summed", "count"], ["mean"]),
            helper.make_node("LpNormalization", ["mean"], ["embedding"], axis=-1, p=2),
        ],
        name,
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", "T"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "T"]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        [
            numpy_helper.from_array(embedding_table(dim), "E"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    manifest = Manifest(
        name=name,
        version=1,
        task=Task.TEXT_EMBEDDING,
        inputs=[
            TensorSpec(name="input_ids", datatype="INT64", shape=[-1, -1]),
            TensorSpec(name="attention_mask", datatype="INT64", shape=[-1, -1]),
        ],
        outputs=[TensorSpec(name="embedding", datatype="FP32", shape=[-1, dim])],
        preprocessing=TextPreprocessing(tokenizer="tokenizer.json", max_length=16),
        batching=Batching(max_batch_size=8),
        artifacts=Artifacts(onnx="model.onnx", torchscript=None),
        provenance=_provenance(),
    )
    directory = _write(store, manifest, graph)
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def forecaster_weights(window: int, horizon: int) -> np.ndarray:
    """Each forecast step is a weighted mean of the window (weights sum to 1)."""
    raw = np.random.default_rng(RNG_SEED).uniform(0.5, 1.5, size=(window, horizon))
    return (raw / raw.sum(axis=0, keepdims=True)).astype(np.float32)


def forecaster(store: Path, name: str = "fc", window: int = 5, horizon: int = 2) -> Path:
    """A linear forecaster: series FP32 [N, window, 1] -> forecast FP32 [N, horizon]."""
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["series", "flat_shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["forecast"]),
        ],
        name,
        [helper.make_tensor_value_info("series", TensorProto.FLOAT, ["N", window, 1])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["N", horizon])],
        [
            numpy_helper.from_array(forecaster_weights(window, horizon), "W"),
            numpy_helper.from_array(np.array([-1, window], dtype=np.int64), "flat_shape"),
        ],
    )
    manifest = Manifest(
        name=name,
        version=1,
        task=Task.TIME_SERIES_FORECASTING,
        inputs=[TensorSpec(name="series", datatype="FP32", shape=[-1, window, 1])],
        outputs=[TensorSpec(name="forecast", datatype="FP32", shape=[-1, horizon])],
        preprocessing=SeriesPreprocessing(window=window, horizon=horizon, season=4),
        batching=Batching(max_batch_size=8),
        artifacts=Artifacts(onnx="model.onnx", torchscript=None),
        provenance=_provenance(),
    )
    return _write(store, manifest, graph)


def full_store(store: Path) -> Path:
    """One model of every task."""
    classifier(store)
    regressor(store)
    image_classifier(store)
    text_embedder(store)
    return store


def slow_model(store: Path, name: str = "slow", width: int = 1024, depth: int = 32) -> Path:
    """A chain of square MatMuls: a few milliseconds per row, to hold requests in flight."""
    rng = np.random.default_rng(RNG_SEED)
    weights = [
        numpy_helper.from_array(
            (rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32), f"W{i}"
        )
        for i in range(depth)
    ]
    nodes = [
        helper.make_node(
            "MatMul",
            ["features" if i == 0 else f"h{i}", f"W{i}"],
            [f"h{i + 1}" if i < depth - 1 else "prediction_wide"],
        )
        for i in range(depth)
    ]
    nodes.append(
        helper.make_node("ReduceMean", ["prediction_wide"], ["prediction"], axes=[1], keepdims=1)
    )
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["N", 1])],
        weights,
    )
    manifest = Manifest(
        name=name,
        version=1,
        task=Task.TABULAR_REGRESSION,
        inputs=[TensorSpec(name="features", datatype="FP32", shape=[-1, width])],
        outputs=[TensorSpec(name="prediction", datatype="FP32", shape=[-1, 1])],
        preprocessing=TabularPreprocessing(feature_names=[f"x{i}" for i in range(width)]),
        batching=Batching(max_batch_size=1),
        artifacts=Artifacts(onnx="model.onnx", torchscript=None),
        provenance=_provenance(),
    )
    return _write(store, manifest, graph)


def busy_model(store: Path, name: str = "busy", width: int = 64) -> Path:
    """A regressor whose cost grows with its input's value, not its shape: feature `x0` (the
    largest in the batch) is the number of `width`x`width` MatMul steps an ONNX Loop runs."""
    rng = np.random.default_rng(RNG_SEED)
    step = numpy_helper.from_array(
        (rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32), "W"
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["state_in", "W"], ["product"]),
            helper.make_node("Tanh", ["product"], ["state_out"]),
        ],
        "step",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, ["N", width]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, ["N", width]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["features"], ["most"], keepdims=0),
            helper.make_node("Cast", ["most"], ["steps"], to=TensorProto.INT64),
            helper.make_node("MatMul", ["features", "ones"], ["state0"]),
            helper.make_node("Loop", ["steps", "", "state0"], ["state"], body=body),
            helper.make_node("ReduceMean", ["state"], ["prediction"], axes=[1], keepdims=1),
        ],
        name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["N", 1])],
        [step, numpy_helper.from_array(np.ones((1, width), dtype=np.float32), "ones")],
    )
    manifest = Manifest(
        name=name,
        version=1,
        task=Task.TABULAR_REGRESSION,
        inputs=[TensorSpec(name="features", datatype="FP32", shape=[-1, 1])],
        outputs=[TensorSpec(name="prediction", datatype="FP32", shape=[-1, 1])],
        preprocessing=TabularPreprocessing(feature_names=["x0"]),
        batching=Batching(max_batch_size=4),
        artifacts=Artifacts(onnx="model.onnx", torchscript=None),
        provenance=_provenance(),
    )
    return _write(store, manifest, graph)
