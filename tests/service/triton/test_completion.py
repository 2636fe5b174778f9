"""Completing a configuration from real model files, and checking what it gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import TensorProto
from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig

from service.errors import ModelConfigError
from service.triton.completion import DEFAULT_MAX_BATCH_SIZE, complete_from_model
from service.triton.layout import ONNX, PT2, TORCHSCRIPT
from service.triton.pbtxt import parse_config
from service.triton.signatures import onnx_signature
from tests.service.triton.models import (
    every_type_model,
    identity_model,
    pt2_model,
    scalar_output_model,
    torchscript_model,
    two_heads_model,
)


def tensors(config: ModelConfig, kind: str) -> list[tuple[str, str, list[int]]]:
    return [(t.name, DataType.Name(t.data_type), list(t.dims)) for t in getattr(config, kind)]


def test_onnx_without_config_is_completed_as_triton_does(tmp_path: Path) -> None:
    path = every_type_model(tmp_path / "model.onnx")
    config = ModelConfig()
    complete_from_model(config, path, ONNX)
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert config.HasField("dynamic_batching")
    recorded = onnx_signature(path)
    assert tensors(config, "input") == [
        (t.name, t.data_type, list(t.shape[1:])) for t in recorded.inputs
    ]
    assert tensors(config, "output") == [
        (t.name, t.data_type, list(t.shape[1:])) for t in recorded.outputs
    ]


def test_not_batchable_keeps_whole_shapes(tmp_path: Path) -> None:
    config = ModelConfig()
    complete_from_model(config, two_heads_model(tmp_path / "model.onnx", batch=1), ONNX)
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert tensors(config, "input") == [("features", "TYPE_FP32", [1, 4])]


def test_scalar_output_becomes_dims_1(tmp_path: Path) -> None:
    config = ModelConfig()
    complete_from_model(config, scalar_output_model(tmp_path / "model.onnx"), ONNX)
    assert config.max_batch_size == 0
    assert tensors(config, "output") == [("total", "TYPE_FP32", [1])]
    assert not config.output[0].HasField("reshape")


def test_given_max_batch_size_is_kept(tmp_path: Path) -> None:
    config = parse_config("max_batch_size: 16")
    complete_from_model(config, two_heads_model(tmp_path / "model.onnx"), ONNX)
    assert config.max_batch_size == 16
    assert tensors(config, "output") == [
        ("scores", "TYPE_FP32", [3]),
        ("total", "TYPE_FP32", [1]),
    ]


def test_partial_config_fills_only_what_is_missing(tmp_path: Path) -> None:
    config = parse_config(
        'max_batch_size: 2\ninput [ { name: "features", dims: [ 2, 2 ] reshape { shape: [ 4 ] } } ]'
    )
    complete_from_model(config, two_heads_model(tmp_path / "model.onnx"), ONNX)
    assert tensors(config, "input") == [("features", "TYPE_FP32", [2, 2])]
    assert list(config.input[0].reshape.shape) == [4]
    assert [t.name for t in config.output] == ["scores", "total"]
    assert config.HasField("dynamic_batching")


def test_inputs_and_outputs_given_add_nothing(tmp_path: Path) -> None:
    """As Triton: a configuration naming both inputs and outputs is not auto-completed, so a
    batchable model stays at max_batch_size 0 and gets no dynamic batching."""
    config = parse_config(
        'input [ { name: "features", data_type: TYPE_FP32, dims: [ 5, 4 ] } ]\n'
        'output [ { name: "total", data_type: TYPE_FP32, dims: [ -1, 1 ] } ]'
    )
    complete_from_model(config, two_heads_model(tmp_path / "model.onnx"), ONNX)
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            'input [ { name: "features", data_type: TYPE_FP64, dims: [ 4 ] } ]',
            "input 'features': data_type TYPE_FP64 in the configuration, the model has TYPE_FP32",
        ),
        (
            'input [ { name: "features", data_type: TYPE_FP32, dims: [ 5 ] } ]',
            "input 'features': dims [5] give the shape [-1, 5]",
        ),
        (
            'input [ { name: "feature", data_type: TYPE_FP32, dims: [ 4 ] } ]',
            "input 'feature': the model has no input of that name (it has 'features')",
        ),
        (
            'output [ { name: "scores", data_type: TYPE_FP32, dims: [ -1 ] } ]',
            "output 'scores': dims [-1] give the shape [-1, -1]",
        ),
    ],
)
def test_mismatch_names_the_tensor(tmp_path: Path, text: str, words: str) -> None:
    config = parse_config("max_batch_size: 4\n" + text)
    with pytest.raises(ModelConfigError) as caught:
        complete_from_model(config, two_heads_model(tmp_path / "model.onnx"), ONNX)
    assert words in caught.value.message


def test_dynamic_model_dimension_accepts_a_fixed_input_size(tmp_path: Path) -> None:
    """Triton's rule: a dynamic model dimension takes any configured input size; outputs
    must match exactly. Every shape of this model is [N, 2]."""
    path = every_type_model(tmp_path / "model.onnx")
    names = ("i8", "i32", "i64", "f16", "flag", "text")
    outputs = "".join(f'output [ {{ name: "{name}_out", dims: [ -1, 2 ] }} ]\n' for name in names)
    config = parse_config('input [ { name: "i8", dims: [ 3, 2 ] } ]\n' + outputs)
    with pytest.raises(ModelConfigError, match="leaves out the model's input 'i32', 'i64'"):
        complete_from_model(config, path, ONNX)
    inputs = "".join(f'input [ {{ name: "{name}", dims: [ 3, 2 ] }} ]\n' for name in names)
    config = parse_config(inputs + outputs)
    complete_from_model(config, path, ONNX)
    assert config.max_batch_size == 0
    assert [list(t.dims) for t in config.input] == [[3, 2]] * 6
    assert [DataType.Name(t.data_type) for t in config.input] == [
        t.data_type for t in onnx_signature(path).inputs
    ]
    config = parse_config(inputs.replace("[ 3, 2 ]", "[ 3, 3 ]") + outputs)
    with pytest.raises(ModelConfigError, match="input 'i8': dims \\[3, 3\\]"):
        complete_from_model(config, path, ONNX)


def test_batching_a_model_that_cannot(tmp_path: Path) -> None:
    config = parse_config("max_batch_size: 8")
    with pytest.raises(ModelConfigError, match="needs a dynamic first dimension"):
        complete_from_model(config, two_heads_model(tmp_path / "model.onnx", batch=1), ONNX)


def test_pt2_program_is_completed(tmp_path: Path) -> None:
    config = ModelConfig()
    complete_from_model(config, pt2_model(tmp_path / "model.pt2"), PT2)
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert config.HasField("dynamic_batching")
    assert tensors(config, "input") == [("x", "TYPE_FP32", [4]), ("ids", "TYPE_INT64", [5])]
    assert tensors(config, "output") == [
        ("OUTPUT__0", "TYPE_FP32", [1]),
        ("OUTPUT__1", "TYPE_FP16", [5]),
    ]


def test_pt2_given_fields_are_checked(tmp_path: Path) -> None:
    config = parse_config('max_batch_size: 2\ninput [ { name: "ids", data_type: TYPE_INT32 } ]')
    with pytest.raises(ModelConfigError, match="input 'ids': data_type TYPE_INT32"):
        complete_from_model(config, pt2_model(tmp_path / "model.pt2"), PT2)


def test_torchscript_says_which_fields_are_needed(tmp_path: Path) -> None:
    path = torchscript_model(tmp_path / "model.pt")
    config = parse_config('input [ { name: "INPUT__0", data_type: TYPE_FP32 } ]')
    with pytest.raises(ModelConfigError) as caught:
        complete_from_model(config, path, TORCHSCRIPT)
    message = caught.value.message
    assert "model.pt (TorchScript) records no tensor names, types or shapes" in message
    assert "max_batch_size" in message
    assert "input [{name, data_type, dims}] and output [{name, data_type, dims}]" in message
    assert message.endswith("missing: input 'INPUT__0' dims, output")
    given = parse_config(
        "max_batch_size: 8\n"
        'input [ { name: "INPUT__0", data_type: TYPE_FP32, dims: [ 4 ] } ]\n'
        'output [ { name: "OUTPUT__0", data_type: TYPE_FP32, dims: [ 4 ] } ]'
    )
    before = ModelConfig()
    before.CopyFrom(given)
    complete_from_model(given, path, TORCHSCRIPT)
    assert given == before


def test_one_value_per_row_gets_an_empty_reshape(tmp_path: Path) -> None:
    """A model tensor of shape [batch] is `dims: [1]` with `reshape: []` (Triton's way)."""
    path = identity_model(tmp_path / "model.onnx", {"score": (TensorProto.FLOAT, ["N"])})
    config = ModelConfig()
    complete_from_model(config, path, ONNX)
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    for tensor in (*config.input, *config.output):
        assert list(tensor.dims) == [1]
        assert tensor.HasField("reshape") and list(tensor.reshape.shape) == []
