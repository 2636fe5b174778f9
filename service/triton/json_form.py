"""The configuration in Triton's JSON form: the body of `GET /v2/models/<m>/config`.

Triton (core `ModelConfigToJson`) prints the protobuf with its field names as written and
every scalar field, default values included, then turns the 64-bit integers that protobuf's
JSON writes as strings back into numbers: all of them except the two below, which it leaves
as strings. Map keys stay strings (JSON keys always are). We do the same so that programs
written against Triton's answer read ours.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tritonclient.grpc.model_config_pb2 import ModelConfig

# Paths of 64-bit fields (field names from ModelConfig down; map values add no step) that
# Triton's JSON leaves as strings.
KEPT_AS_STRINGS = frozenset(
    {
        ("optimization", "cuda", "graph_spec", "input", "dim"),
        ("optimization", "cuda", "graph_spec", "graph_lower_bound", "input", "dim"),
        ("instance_group", "secondary_devices", "device_id"),
    }
)

_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def config_json(config: ModelConfig) -> dict[str, Any]:
    """The configuration as Triton's HTTP endpoint answers it."""
    body: dict[str, Any] = json_format.MessageToDict(
        config, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    _numbers(body, ModelConfig.DESCRIPTOR, ())
    return body


def int64_paths(descriptor: Descriptor = ModelConfig.DESCRIPTOR) -> set[tuple[str, ...]]:
    """Every 64-bit integer field under `descriptor`, as paths like those above; an integer
    map key ends its path with `<key>`."""
    found: set[tuple[str, ...]] = set()

    def walk(message: Descriptor, path: tuple[str, ...], above: frozenset[str]) -> None:
        for field in message.fields:
            here = (*path, field.name)
            if field.type in _INT64_TYPES:
                found.add(here)
                continue
            entry = field.message_type
            if entry is None or entry.full_name in above:
                continue
            if entry.GetOptions().map_entry:
                if entry.fields_by_name["key"].type in _INT64_TYPES:
                    found.add((*here, "<key>"))
                value = entry.fields_by_name["value"]
                if value.type in _INT64_TYPES:
                    found.add(here)
                elif value.message_type is not None:
                    walk(value.message_type, here, above | {message.full_name})
            else:
                walk(entry, here, above | {message.full_name})

    walk(descriptor, (), frozenset())
    return found


def _map_value(field: FieldDescriptor) -> Descriptor | None:
    """The value message of a map field whose values are messages."""
    entry = field.message_type
    if entry is None or not entry.GetOptions().map_entry:
        return None
    value: Descriptor | None = entry.fields_by_name["value"].message_type
    return value


def _numbers(body: dict[str, Any], message: Descriptor, path: tuple[str, ...]) -> None:
    for field in message.fields:
        if field.name not in body:
            continue
        here = (*path, field.name)
        value = body[field.name]
        if field.type in _INT64_TYPES:
            if here not in KEPT_AS_STRINGS:
                body[field.name] = (
                    [int(v) for v in value] if isinstance(value, list) else int(value)
                )
            continue
        if field.message_type is None:
            continue
        map_value = _map_value(field)
        if field.message_type.GetOptions().map_entry:
            if map_value is not None:
                for item in value.values():
                    _numbers(item, map_value, here)
        elif isinstance(value, list):
            for item in value:
                _numbers(item, field.message_type, here)
        else:
            _numbers(value, field.message_type, here)
