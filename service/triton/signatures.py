"""The tensors a model file records: names, config data types and shapes (-1 where dynamic).

ONNX graphs record all of it and onnxruntime reads it (the `onnx` package is not needed).
A `.pt2` archive written by `torch.export.save` records its program's user inputs and outputs
with fake tensors (`meta["val"]`) whose symbolic sizes are the dynamic dimensions; an
AOTInductor package alone records no shapes, and TorchScript records nothing usable.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import ModelConfigError
from service.triton import datatypes

DYNAMIC = -1


@dataclass(frozen=True, slots=True)
class GraphTensor:
    name: str
    data_type: str
    """Triton's spelling: `TYPE_FP32`."""
    shape: tuple[int, ...]
    """Every dimension, the batch one included; -1 where the size is dynamic."""


@dataclass(frozen=True, slots=True)
class Signature:
    """The inputs (in call order) and outputs (in return order) of a model file."""

    inputs: tuple[GraphTensor, ...]
    outputs: tuple[GraphTensor, ...]

    @property
    def batchable(self) -> bool:
        """Triton's rule: every input and output has a dynamic first dimension."""
        return all(
            tensor.shape and tensor.shape[0] == DYNAMIC for tensor in (*self.inputs, *self.outputs)
        )


def onnx_signature(path: Path) -> Signature:
    """Read an ONNX file's inputs and outputs with onnxruntime (no execution provider but
    the CPU's, no graph optimization: only the signature is wanted)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises its own exception types
        raise ModelConfigError(f"{path.name}: onnxruntime cannot read it: {error}") from error
    return Signature(
        tuple(_onnx_tensor(path, "input", arg) for arg in session.get_inputs()),
        tuple(_onnx_tensor(path, "output", arg) for arg in session.get_outputs()),
    )


def _onnx_tensor(path: Path, kind: str, arg: Any) -> GraphTensor:
    data_type = datatypes.from_onnxruntime(arg.type)
    if data_type is None:
        raise ModelConfigError(f"{path.name}: {kind} {arg.name!r}: type {arg.type} is not served")
    # Fixed sizes are ints; named (dim_param) and unknown ones are str or None.
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else DYNAMIC for dim in arg.shape)
    return GraphTensor(arg.name, data_type, shape)


def pt2_contents(path: Path) -> tuple[bool, bool]:
    """(holds a torch.export program, holds an AOTInductor package) for a `.pt2` archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelConfigError(f"{path.name}: not a .pt2 archive ({error})") from None
    parts = [name.split("/")[1:] for name in names]
    program = any(p[:1] == ["models"] and p[-1].endswith(".json") for p in parts)
    aoti = any(p[:2] == ["data", "aotinductor"] for p in parts)
    return program, aoti


def pt2_signature(path: Path) -> Signature:
    """Read what `torch.export.save` recorded. Outputs are named by the keys of a returned
    dict, else `OUTPUT__<i>` (Triton's PyTorch naming); inputs by the forward's arguments."""
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as error:  # torch raises many types here
        raise ModelConfigError(f"{path.name}: torch.export.load cannot read it: {error}") from error
    signature = program.graph_signature
    nodes = {node.name: node for node in program.graph.nodes}
    inputs = []
    for index, spec in enumerate(signature.input_specs):
        if spec.kind != torch.export.graph_signature.InputKind.USER_INPUT:
            continue
        name = getattr(spec.arg, "name", None)
        if name is None or name not in nodes:
            raise ModelConfigError(
                f"{path.name}: input {index} is a constant, not a tensor: it cannot be served"
            )
        inputs.append(_fake_tensor(path, "input", name, nodes[name].meta.get("val")))
    output_node = next(node for node in program.graph.nodes if node.op == "output")
    by_name = {node.name: node for node in output_node.args[0] if hasattr(node, "name")}
    names = _output_names(program, len(signature.user_outputs))
    outputs = []
    for name, arg in zip(names, signature.user_outputs, strict=True):
        node = by_name.get(str(arg))
        if node is None:
            raise ModelConfigError(f"{path.name}: output {name!r} is not a tensor")
        outputs.append(_fake_tensor(path, "output", name, node.meta.get("val")))
    return Signature(tuple(inputs), tuple(outputs))


def _output_names(program: Any, count: int) -> list[str]:
    spec = program.call_spec.out_spec
    if spec is not None and spec.type is dict and len(spec.context) == count:
        return [str(key) for key in spec.context]
    return [f"OUTPUT__{index}" for index in range(count)]


def _fake_tensor(path: Path, kind: str, name: str, value: Any) -> GraphTensor:
    import torch

    if not isinstance(value, torch.Tensor):
        raise ModelConfigError(f"{path.name}: {kind} {name!r} is not a tensor")
    data_type = datatypes.from_torch(value.dtype)
    if data_type is None:
        raise ModelConfigError(f"{path.name}: {kind} {name!r}: dtype {value.dtype} is not served")
    shape = tuple(dim if isinstance(dim, int) else DYNAMIC for dim in value.shape)
    return GraphTensor(name, data_type, shape)
