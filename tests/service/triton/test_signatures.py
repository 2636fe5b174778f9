"""What model files record, read back from real ONNX and .pt2 files."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import TensorProto

from service.errors import ModelConfigError
from service.triton.signatures import (
    GraphTensor,
    onnx_signature,
    pt2_contents,
    pt2_signature,
)
from tests.service.triton.models import (
    EVERY_TYPE,
    every_type_model,
    identity_model,
    pt2_model,
    scalar_output_model,
    two_heads_model,
)

CONFIG_TYPES = {
    "i8": "TYPE_INT8",
    "i32": "TYPE_INT32",
    "i64": "TYPE_INT64",
    "f16": "TYPE_FP16",
    "flag": "TYPE_BOOL",
    "text": "TYPE_STRING",
}


def test_onnx_types_names_and_dynamic_dims(tmp_path: Path) -> None:
    signature = onnx_signature(every_type_model(tmp_path / "model.onnx"))
    assert [t.name for t in signature.inputs] == list(EVERY_TYPE)
    assert {t.name: t.data_type for t in signature.inputs} == CONFIG_TYPES
    assert {t.name: t.data_type for t in signature.outputs} == {
        f"{name}_out": kind for name, kind in CONFIG_TYPES.items()
    }
    assert all(t.shape == (-1, 2) for t in (*signature.inputs, *signature.outputs))
    assert signature.batchable


def test_onnx_fixed_and_scalar_shapes_are_not_batchable(tmp_path: Path) -> None:
    fixed = onnx_signature(two_heads_model(tmp_path / "fixed.onnx", batch=1))
    assert fixed.inputs == (GraphTensor("features", "TYPE_FP32", (1, 4)),)
    assert not fixed.batchable
    scalar = onnx_signature(scalar_output_model(tmp_path / "scalar.onnx"))
    assert scalar.outputs == (GraphTensor("total", "TYPE_FP32", ()),)
    assert not scalar.batchable


def test_onnx_type_we_do_not_serve(tmp_path: Path) -> None:
    path = identity_model(tmp_path / "model.onnx", {"z": (TensorProto.BFLOAT16, ["N"])})
    with pytest.raises(ModelConfigError, match=r"input 'z': type tensor\(bfloat16\) is not served"):
        onnx_signature(path)


def test_onnx_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a graph")
    with pytest.raises(ModelConfigError, match="onnxruntime cannot read it"):
        onnx_signature(path)


def test_pt2_program_records_its_signature(tmp_path: Path) -> None:
    path = pt2_model(tmp_path / "model.pt2")
    assert pt2_contents(path) == (True, False)
    signature = pt2_signature(path)
    assert signature.inputs == (
        GraphTensor("x", "TYPE_FP32", (-1, 4)),
        GraphTensor("ids", "TYPE_INT64", (-1, 5)),
    )
    assert signature.outputs == (
        GraphTensor("OUTPUT__0", "TYPE_FP32", (-1, 1)),
        GraphTensor("OUTPUT__1", "TYPE_FP16", (-1, 5)),
    )
    assert signature.batchable


def test_pt2_static_program_and_named_outputs(tmp_path: Path) -> None:
    static = pt2_signature(pt2_model(tmp_path / "static.pt2", dynamic=False))
    assert [t.shape for t in static.inputs] == [(3, 4), (3, 5)]
    assert not static.batchable
    named = pt2_signature(pt2_model(tmp_path / "named.pt2", dict_output=True))
    assert [t.name for t in named.outputs] == ["total", "halves"]


def test_not_a_pt2_archive(tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    path.write_bytes(b"nope")
    with pytest.raises(ModelConfigError, match=r"not a \.pt2 archive"):
        pt2_contents(path)
