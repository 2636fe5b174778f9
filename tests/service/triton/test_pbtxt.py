"""config.pbtxt: parsed with Triton's protobuf; errors name the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig

from service.errors import ModelConfigError
from service.triton.pbtxt import parse_config, read_config, render_pbtxt

CONFIG = """
name: "net"
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "x", data_type: TYPE_FP32, dims: [ 3, -1 ] } ]
output [ { name: "y", data_type: TYPE_STRING, dims: [ 1 ], label_filename: "labels.txt" } ]
dynamic_batching { max_queue_delay_microseconds: 500 }
"""


def test_fields_are_read() -> None:
    config = parse_config(CONFIG)
    assert config.name == "net"
    assert config.max_batch_size == 8
    assert list(config.input[0].dims) == [3, -1]
    assert config.output[0].data_type == DataType.TYPE_STRING
    assert config.output[0].label_filename == "labels.txt"
    assert config.dynamic_batching.max_queue_delay_microseconds == 500


def test_rendered_text_reads_back_equal() -> None:
    config = parse_config(CONFIG)
    assert parse_config(render_pbtxt(config)) == config


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('name: "a"\nmax_batch_size: 4\ninput [ { name: "x" dims: [ 1 ] ]\n', 3, ""),
        ('name: "a"\n\nmax_batch: 4\n', 3, "max_batch"),
        ('name: "a"\ninput [ { data_type: TYPE_FLOAT32 } ]\n', 2, "TYPE_FLOAT32"),
    ],
)
def test_broken_config_names_file_and_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text(text)
    with pytest.raises(ModelConfigError) as caught:
        read_config(path)
    assert caught.value.message.startswith(f"{path} line {line} column ")
    assert words in caught.value.message


def test_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_bytes(b'name: "\xff"\n')
    with pytest.raises(ModelConfigError, match="not UTF-8"):
        read_config(path)


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text("# nothing yet\n")
    assert read_config(path) == ModelConfig()
