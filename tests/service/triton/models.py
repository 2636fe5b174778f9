"""Small real model files for the Triton tests: ONNX graphs built with onnx.helper (as
tests/tiny_models.py builds its own), `.pt2` archives written by torch.export, TorchScript,
and a helper that lays them out as a Triton model folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.tiny_models import OPSET

Dim = int | str
"""A fixed size, or a name for a dynamic one."""

EVERY_TYPE = {
    "i8": TensorProto.INT8,
    "i32": TensorProto.INT32,
    "i64": TensorProto.INT64,
    "f16": TensorProto.FLOAT16,
    "flag": TensorProto.BOOL,
    "text": TensorProto.STRING,
}
"""Input name -> element type of `every_type_model`; each output is `<input>_out`."""


def save_onnx(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def identity_model(path: Path, tensors: dict[str, tuple[int, list[Dim]]]) -> Path:
    """Each input `name` (element type, shape) is returned as output `<name>_out`."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], [f"{name}_out"]) for name in tensors],
        "identity",
        [helper.make_tensor_value_info(n, t, shape) for n, (t, shape) in tensors.items()],
        [helper.make_tensor_value_info(f"{n}_out", t, shape) for n, (t, shape) in tensors.items()],
    )
    return save_onnx(graph, path)


def every_type_model(path: Path) -> Path:
    return identity_model(path, {name: (kind, ["N", 2]) for name, kind in EVERY_TYPE.items()})


def two_heads_model(path: Path, batch: Dim = "N") -> Path:
    """features FP32 [batch, 4] -> scores FP32 [batch, 3] (softmax), total FP32 [batch, 1]."""
    weight = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["scores"], axis=-1),
            helper.make_node("ReduceSum", ["features", "axis1"], ["total"], keepdims=1),
        ],
        "two_heads",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, 4])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 3]),
            helper.make_tensor_value_info("total", TensorProto.FLOAT, [batch, 1]),
        ],
        [
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    return save_onnx(graph, path)


def scalar_output_model(path: Path) -> Path:
    """values FP32 [N, 3] -> total FP32 [] (a scalar: the model cannot batch)."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["values"], ["total"], keepdims=0)],
        "scalar",
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [])],
    )
    return save_onnx(graph, path)


def pt2_model(path: Path, *, dynamic: bool = True, dict_output: bool = False) -> Path:
    """x FP32 [B, 4], ids INT64 [B, 5] -> (x summed [B, 1] FP32, ids as FP16 [B, 5]); with
    `dict_output` the results are named `total` and `halves`."""
    import torch

    class Model(torch.nn.Module):
        def forward(self, x: torch.Tensor, ids: torch.Tensor) -> object:
            total = x.sum(-1, keepdim=True)
            halves = ids.to(torch.float16)
            return {"total": total, "halves": halves} if dict_output else (total, halves)

    batch = torch.export.Dim("batch", min=1, max=64)
    shapes = {"x": {0: batch}, "ids": {0: batch}} if dynamic else None
    example = (torch.ones(3, 4), torch.ones(3, 5, dtype=torch.int64))
    program = torch.export.export(Model(), example, dynamic_shapes=shapes)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    return path


def torchscript_model(path: Path) -> Path:
    import torch

    class Model(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(Model()), str(path))  # type: ignore[no-untyped-call]
    return path


def model_folder(store: Path, name: str, config: str | None = None) -> Path:
    """`store/name/` with `config.pbtxt` holding `config` when given."""
    folder = store / name
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (folder / "config.pbtxt").write_text(config)
    return folder


def accumulator_model(path: Path) -> Path:
    """A Triton-style accumulator with control inputs and implicit state, batch first:
    OUTPUT = (START ? 0 : ACC_IN) + INPUT * READY, and ACC_OUT = OUTPUT; CORRID and END are
    echoed (CORRID_OUT, END_OUT) so that a client sees what the server fed."""
    int32 = TensorProto.INT32

    def value(name: str, kind: int = int32) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, kind, ["N", 1])

    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["one", "START"], ["keep"]),
            helper.make_node("Mul", ["ACC_IN", "keep"], ["base"]),
            helper.make_node("Mul", ["INPUT", "READY"], ["added"]),
            helper.make_node("Add", ["base", "added"], ["OUTPUT"]),
            helper.make_node("Identity", ["OUTPUT"], ["ACC_OUT"]),
            helper.make_node("Identity", ["CORRID"], ["CORRID_OUT"]),
            helper.make_node("Identity", ["END"], ["END_OUT"]),
        ],
        "accumulator",
        [
            value("INPUT"),
            value("START"),
            value("READY"),
            value("END"),
            value("CORRID", TensorProto.UINT64),
            value("ACC_IN"),
        ],
        [
            value("OUTPUT"),
            value("ACC_OUT"),
            value("CORRID_OUT", TensorProto.UINT64),
            value("END_OUT"),
        ],
        [numpy_helper.from_array(np.array([[1]], dtype=np.int32), "one")],
    )
    return save_onnx(graph, path)


ACCUMULATOR_CONFIG = """max_batch_size: 8
input [ { name: "INPUT", data_type: TYPE_INT32, dims: [ 1 ] } ]
output [
  { name: "OUTPUT", data_type: TYPE_INT32, dims: [ 1 ] },
  { name: "CORRID_OUT", data_type: TYPE_UINT64, dims: [ 1 ] },
  { name: "END_OUT", data_type: TYPE_INT32, dims: [ 1 ] }
]
sequence_batching {
  max_sequence_idle_microseconds: %(idle)d
  %(strategy)s
  control_input [
    { name: "START", control [ { kind: CONTROL_SEQUENCE_START, int32_false_true: [ 0, 1 ] } ] },
    { name: "READY", control [ { kind: CONTROL_SEQUENCE_READY, int32_false_true: [ 0, 1 ] } ] },
    { name: "END", control [ { kind: CONTROL_SEQUENCE_END, int32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID", control [ { kind: CONTROL_SEQUENCE_CORRID, data_type: TYPE_UINT64 } ] }
  ]
  state [ { input_name: "ACC_IN", output_name: "ACC_OUT", data_type: TYPE_INT32, dims: [ 1 ] } ]
}
"""


def running_total_model(path: Path) -> Path:
    """Implicit state only, no batch dimension: OUTPUT = TOTAL_IN + INPUT = TOTAL_OUT."""
    fp32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["TOTAL_IN", "INPUT"], ["OUTPUT"]),
            helper.make_node("Identity", ["OUTPUT"], ["TOTAL_OUT"]),
        ],
        "running_total",
        [
            helper.make_tensor_value_info("INPUT", fp32, [1]),
            helper.make_tensor_value_info("TOTAL_IN", fp32, [1]),
        ],
        [
            helper.make_tensor_value_info("OUTPUT", fp32, [1]),
            helper.make_tensor_value_info("TOTAL_OUT", fp32, [1]),
        ],
    )
    return save_onnx(graph, path)


RUNNING_TOTAL_CONFIG = """max_batch_size: 0
sequence_batching {
  max_sequence_idle_microseconds: 60000000
  oldest { max_candidate_sequences: 16 }
  state [ {
    input_name: "TOTAL_IN", output_name: "TOTAL_OUT", data_type: TYPE_FP32, dims: [ 1 ],
    initial_state: { name: "zeros", data_type: TYPE_FP32, dims: [ 1 ], zero_data: true }
  } ]
}
"""


def scaled_model(path: Path, factor: float) -> Path:
    """v FP32 [N, 2] -> y = v * factor (versions told apart by their answers)."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["v", "k"], ["y"])],
        "scaled",
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(np.array([factor], np.float32), "k")],
    )
    return save_onnx(graph, path)
