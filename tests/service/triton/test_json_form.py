"""Triton's JSON form: field names as written, defaults printed, 64-bit numbers as numbers
except where Triton leaves strings."""

from __future__ import annotations

import json

from google.protobuf import json_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from service.triton.json_form import KEPT_AS_STRINGS, config_json, int64_paths
from service.triton.pbtxt import parse_config

CONFIG = parse_config(
    """
name: "net"
max_batch_size: 8
version_policy { specific { versions: [ 1, 3 ] } }
input [ { name: "x", data_type: TYPE_FP32, dims: [ 3, -1 ], reshape { shape: [ -1, 3 ] } } ]
output [ { name: "y", data_type: TYPE_INT64, dims: [ 2 ] } ]
dynamic_batching {
  max_queue_delay_microseconds: 500
  priority_levels: 3
  default_priority_level: 2
  default_queue_policy { default_timeout_microseconds: 70000 max_queue_size: 9 }
}
instance_group [ { count: 2, kind: KIND_CPU,
  secondary_devices [ { kind: KIND_NVDLA, device_id: 5 } ] } ]
model_warmup [ { name: "w", batch_size: 1,
  inputs { key: "x" value { data_type: TYPE_FP32, dims: [ 3, 3 ], zero_data: true } } } ]
"""
)

# Triton core's ValidateModelConfigInt64 lists the ModelConfig's 64-bit fields it knows.
TRITON_INT64_FIELDS = {
    ("input", "dims"),
    ("input", "reshape", "shape"),
    ("output", "dims"),
    ("output", "reshape", "shape"),
    ("version_policy", "specific", "versions"),
    ("dynamic_batching", "max_queue_delay_microseconds"),
    ("dynamic_batching", "default_queue_policy", "default_timeout_microseconds"),
    ("dynamic_batching", "priority_queue_policy", "default_timeout_microseconds"),
    ("dynamic_batching", "priority_levels"),
    ("dynamic_batching", "priority_queue_policy", "<key>"),
    ("dynamic_batching", "default_priority_level"),
    ("sequence_batching", "direct", "max_queue_delay_microseconds"),
    ("sequence_batching", "state", "dims"),
    ("sequence_batching", "state", "initial_state", "dims"),
    ("sequence_batching", "oldest", "max_queue_delay_microseconds"),
    ("sequence_batching", "max_sequence_idle_microseconds"),
    ("ensemble_scheduling", "step", "model_version"),
    ("model_warmup", "inputs", "dims"),
    ("optimization", "cuda", "graph_spec", "input", "dim"),
    ("optimization", "cuda", "graph_spec", "graph_lower_bound", "input", "dim"),
    ("instance_group", "secondary_devices", "device_id"),
}


def test_the_proto_has_the_64_bit_fields_triton_handles() -> None:
    """A tritonclient whose ModelConfig gains a 64-bit field fails here, as Triton's own
    check does, so the JSON form gets reviewed."""
    assert int64_paths() == TRITON_INT64_FIELDS
    assert KEPT_AS_STRINGS < TRITON_INT64_FIELDS


def test_64_bit_fields_are_numbers() -> None:
    body = config_json(CONFIG)
    assert body["input"][0]["dims"] == [3, -1]
    assert body["input"][0]["reshape"]["shape"] == [-1, 3]
    assert body["output"][0]["dims"] == [2]
    assert body["version_policy"]["specific"]["versions"] == [1, 3]
    batching = body["dynamic_batching"]
    assert batching["max_queue_delay_microseconds"] == 500
    assert batching["priority_levels"] == 3
    assert batching["default_priority_level"] == 2
    assert batching["default_queue_policy"]["default_timeout_microseconds"] == 70000
    assert body["model_warmup"][0]["inputs"]["x"]["dims"] == [3, 3]


def test_triton_leaves_device_ids_as_strings() -> None:
    body = config_json(CONFIG)
    assert body["instance_group"][0]["secondary_devices"][0]["device_id"] == "5"


def test_field_names_as_written_and_defaults_printed() -> None:
    body = config_json(CONFIG)
    assert body["max_batch_size"] == 8
    assert body["output"][0]["data_type"] == "TYPE_INT64"
    assert body["input"][0]["optional"] is False
    assert body["output"][0]["label_filename"] == ""
    assert body["platform"] == ""
    assert body["dynamic_batching"]["preserve_ordering"] is False


def test_reads_back_into_the_same_config() -> None:
    """Triton's clients send this form back (load with a config): it must parse."""
    text = json.dumps(config_json(CONFIG))
    assert json_format.Parse(text, ModelConfig()) == CONFIG
