"""The typed view of a full configuration, on a real ONNX model."""

from __future__ import annotations

from pathlib import Path

from service.triton.resolve import resolve_model
from service.triton.view import (
    DynamicBatching,
    InputView,
    InstanceGroup,
    OutputView,
    QueuePolicy,
    RuntimeOptions,
    WarmupInput,
)
from tests.service.triton.models import every_type_model, model_folder, two_heads_model

FULL = """
max_batch_size: 8
input [ { name: "features", data_type: TYPE_FP32, dims: [ 2, 2 ], reshape { shape: [ 4 ] } } ]
output [
  { name: "scores", data_type: TYPE_FP32, dims: [ 3 ], label_filename: "labels.txt" },
  { name: "total", data_type: TYPE_FP32, dims: [ 1 ] }
]
dynamic_batching {
  max_queue_delay_microseconds: 2000
  preferred_batch_size: [ 2, 4 ]
  priority_levels: 3
  default_priority_level: 2
  default_queue_policy {
    max_queue_size: 16
    default_timeout_microseconds: 50000
    allow_timeout_override: true
    timeout_action: DELAY
  }
}
instance_group [ { count: 2, kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value { string_value: "3" } }
parameters { key: "inter_op_thread_count" value { string_value: "1" } }
optimization {
  graph { level: 1 }
  execution_accelerators {
    gpu_execution_accelerator [ { name: "tensorrt" } ]
    cpu_execution_accelerator [ { name: "openvino" } ]
  }
}
model_warmup [ {
  name: "ones"
  batch_size: 2
  count: 3
  inputs { key: "features" value { data_type: TYPE_FP32, dims: [ 2, 2 ], random_data: true } }
} ]
"""


def test_every_concept_is_typed(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "scorer", FULL)
    two_heads_model(folder / "1" / "model.onnx")
    (folder / "labels.txt").write_text("low\nmid\nhigh\n")
    view = resolve_model(folder).serving
    assert (view.name, view.runtime, view.platform, view.backend) == (
        "scorer",
        "onnxruntime",
        "onnxruntime_onnx",
        "onnxruntime",
    )
    assert view.max_batch_size == 8 and view.batching
    assert view.inputs == (InputView("features", "FP32", (2, 2), reshape=(4,)),)
    assert view.inputs[0].model_shape(view.batching) == (-1, 4)
    assert view.outputs == (
        OutputView("scores", "FP32", (3,), labels=("low", "mid", "high")),
        OutputView("total", "FP32", (1,)),
    )
    assert view.dynamic_batching == DynamicBatching(
        max_queue_delay_microseconds=2000,
        preferred_batch_size=(2, 4),
        priority_levels=3,
        default_priority_level=2,
        default_queue_policy=QueuePolicy(
            max_queue_size=16,
            default_timeout_microseconds=50000,
            allow_timeout_override=True,
            timeout_action="DELAY",
        ),
    )
    assert view.instance_groups == (InstanceGroup("scorer_0", "CPU", 2),)
    assert view.runtime_options == RuntimeOptions(
        intra_op_threads=3,
        inter_op_threads=1,
        graph_optimization="extended",
        gpu_providers=("TensorrtExecutionProvider",),
        cpu_providers=("OpenVINOExecutionProvider",),
    )
    assert view.runtime_options.providers("CPU") == (
        "OpenVINOExecutionProvider",
        "CPUExecutionProvider",
    )
    assert view.runtime_options.providers("GPU") == (
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "OpenVINOExecutionProvider",
        "CPUExecutionProvider",
    )
    (warmup,) = view.warmup
    assert (warmup.name, warmup.batch_size, warmup.count) == ("ones", 2, 3)
    assert warmup.inputs == (WarmupInput("features", "FP32", (2, 2), "random_data"),)


def test_v2_datatypes_and_defaults_without_config(tmp_path: Path) -> None:
    view = resolve_model(every_type_model(tmp_path / "model.onnx")).serving
    assert [(t.name, t.datatype) for t in view.inputs] == [
        ("i8", "INT8"),
        ("i32", "INT32"),
        ("i64", "INT64"),
        ("f16", "FP16"),
        ("flag", "BOOL"),
        ("text", "BYTES"),
    ]
    assert all(t.dims == (2,) and t.reshape is None for t in (*view.inputs, *view.outputs))
    assert view.dynamic_batching == DynamicBatching(preferred_batch_size=(4,))
    assert view.runtime_options == RuntimeOptions()
    assert view.warmup == ()


def test_max_batch_size_0_with_optional_input(tmp_path: Path) -> None:
    folder = model_folder(
        tmp_path,
        "whole",
        'input [ { name: "features", data_type: TYPE_FP32, dims: [ 1, 4 ], optional: true } ]\n'
        'output [ { name: "total", data_type: TYPE_FP32, dims: [ 1, 1 ] } ]',
    )
    two_heads_model(folder / "1" / "model.onnx", batch=1)
    view = resolve_model(folder).serving
    assert view.max_batch_size == 0 and not view.batching
    assert view.dynamic_batching is None
    assert view.inputs == (InputView("features", "FP32", (1, 4), optional=True),)
    assert view.inputs[0].model_shape(view.batching) == (1, 4)
