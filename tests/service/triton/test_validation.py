"""What cannot be honoured is refused with the field's name."""

from __future__ import annotations

import pytest

from service.errors import ModelConfigError
from service.triton.pbtxt import parse_config
from service.triton.validation import check_servable, check_tensors

IO = """
input [ { name: "x", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [ 4 ] } ]
"""


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('platform: "ensemble"\nensemble_scheduling { step [ { model_name: "a" } ] }', "ensemble"),
        ('platform: "ensemble"', "ensemble_scheduling"),
        ('backend: "python"', "backend: 'python'"),
        ('backend: "tensorrt"', "backend: 'tensorrt'"),
        ('backend: "tensorflow"', "backend: 'tensorflow'"),
        (
            'backend: "onnxruntime"\nsequence_batching { iterative_sequence: true }',
            "sequence_batching.iterative_sequence",
        ),
        (
            'backend: "onnxruntime"\nsequence_batching { control_input [ { name: "S" control '
            "[ { kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] fp32_false_true: [0, 1] }"
            " ] } ] }",
            "control_input 'S': CONTROL_SEQUENCE_START needs exactly one of",
        ),
        (
            'backend: "onnxruntime"\nsequence_batching { control_input [ { name: "C" control '
            "[ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_FP32 } ] } ] }",
            "control_input 'C': CONTROL_SEQUENCE_CORRID takes a data_type",
        ),
        (
            'backend: "onnxruntime"\nsequence_batching { control_input [ '
            '{ name: "A" control [ { kind: CONTROL_SEQUENCE_END bool_false_true: [false, true] } ] },'
            '{ name: "B" control [ { kind: CONTROL_SEQUENCE_END bool_false_true: [false, true] } ] }'
            " ] }",
            "control_input 'B': a second CONTROL_SEQUENCE_END control",
        ),
        (
            'backend: "onnxruntime"\nsequence_batching { state [ { input_name: "i" output_name: '
            '"o" data_type: TYPE_FP32 dims: [2] initial_state [ { data_type: TYPE_FP32 dims: [2] '
            'data_file: "init" name: "x" } ] } ] }',
            "data_file is not served",
        ),
        (
            'backend: "onnxruntime"\nsequence_batching { state [ { input_name: "i" output_name: '
            '"o" data_type: TYPE_FP32 dims: [-1] } ] }',
            "state 'i': dims [-1] hold a variable size",
        ),
        ('backend: "onnxruntime"\nmodel_transaction_policy { decoupled: true }', "decoupled"),
        (
            'backend: "onnxruntime"\ndynamic_batching { priority_levels: 2 '
            "priority_queue_policy { key: 1 value { max_queue_size: 3 } } }",
            "dynamic_batching.priority_queue_policy",
        ),
        ('backend: "onnxruntime"\ninstance_group [ { kind: KIND_MODEL } ]', "KIND_MODEL"),
        (
            'backend: "onnxruntime"\noptimization { execution_accelerators { '
            'gpu_execution_accelerator [ { name: "nitro" } ] } }',
            "unknown Execution Accelerator 'nitro' is requested",
        ),
        (
            'backend: "pytorch"\noptimization { execution_accelerators { '
            'cpu_execution_accelerator [ { name: "openvino" } ] } }',
            "only served for the onnxruntime backend",
        ),
        (
            'backend: "onnxruntime"\nparameters { key: "intra_op_thread_count" '
            'value { string_value: "many" } }',
            "parameters 'intra_op_thread_count'",
        ),
        (
            'backend: "onnxruntime"\ninput [ { name: "x", allow_ragged_batch: true } ]',
            "input 'x': is_shape_tensor, allow_ragged_batch",
        ),
    ],
)
def test_refused_with_the_field(text: str, field: str) -> None:
    with pytest.raises(ModelConfigError) as caught:
        check_servable(parse_config(text))
    assert field in caught.value.message


def test_what_we_serve_passes() -> None:
    check_servable(
        parse_config(
            'backend: "onnxruntime"\nmax_batch_size: 8\n'
            "dynamic_batching { priority_levels: 2 default_priority_level: 1 }\n"
            'parameters { key: "intra_op_thread_count" value { string_value: "2" } }\n'
            "instance_group [ { count: 2, kind: KIND_CPU } ]\n" + IO
        )
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('input [ { name: "x", data_type: TYPE_BF16, dims: [ 4 ] } ]', "TYPE_BF16 is not served"),
        ('input [ { name: "x", dims: [ 4 ] } ]', "input 'x': must specify 'data_type'"),
        ('input [ { name: "x", data_type: TYPE_FP32 } ]', "input 'x': must specify 'dims'"),
        ('input [ { name: "x", data_type: TYPE_FP32, dims: [ 0 ] } ]', "integer >= 1, or -1"),
        (
            'input [ { name: "x", data_type: TYPE_FP32, dims: [ 4 ] reshape { shape: [ 3 ] } } ]',
            "reshape [3] holds a different number of elements than dims [4]",
        ),
        (
            'input [ { name: "x", data_type: TYPE_FP32, dims: [ 2, -1 ] '
            "reshape { shape: [ -1, 2 ] } } ]",
            "different number of elements",
        ),
        (
            'input [ { name: "x", data_type: TYPE_FP32, dims: [ 4 ] optional: true } ]',
            "input 'x': optional inputs are not served for models that support batching",
        ),
        (
            'input [ { name: "x", data_type: TYPE_FP32, dims: [ 4 ] } ]\n'
            'input [ { name: "x", data_type: TYPE_FP32, dims: [ 4 ] } ]',
            "input 'x': named twice",
        ),
        (
            'input [ { name: "x", data_type: TYPE_FP32, dims: [ 4 ] } ]\n'
            'model_warmup [ { name: "w" batch_size: 9 inputs { key: "x" value { '
            "data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]",
            "model_warmup 'w': batch_size must be between 1 and max_batch_size 8",
        ),
    ],
)
def test_tensor_fields_are_checked(text: str, words: str) -> None:
    config = parse_config(
        "max_batch_size: 8\n" + text + '\noutput [ { name: "y", data_type: TYPE_FP32, dims: [1] } ]'
    )
    with pytest.raises(ModelConfigError) as caught:
        check_tensors(config)
    assert words in caught.value.message


def test_reshapes_triton_accepts() -> None:
    check_tensors(
        parse_config(
            "max_batch_size: 8\n"
            'input [ { name: "a", data_type: TYPE_FP32, dims: [ 2, 4, -1, 6 ] '
            "reshape { shape: [ 8, -1, 1, 6 ] } },"
            '{ name: "b", data_type: TYPE_STRING, dims: [ 1 ] reshape { shape: [ ] } } ]\n'
            'output [ { name: "y", data_type: TYPE_BOOL, dims: [ 1 ] } ]'
        )
    )


def test_empty_reshape_needs_batching() -> None:
    config = parse_config(
        'input [ { name: "a", data_type: TYPE_FP32, dims: [ 1 ] reshape { shape: [ ] } } ]\n'
        'output [ { name: "y", data_type: TYPE_FP32, dims: [ 1 ] } ]'
    )
    with pytest.raises(ModelConfigError, match="reshape: cannot be empty"):
        check_tensors(config)
