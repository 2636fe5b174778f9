"""gRPC messages <-> the request and metadata types the REST side uses.

Tensors arrive as `raw_input_contents` (what `tritonclient.grpc` always sends; read with
`np.frombuffer`, no copy) or as typed `contents`; answers always go out as
`raw_output_contents`, as Triton answers. Sizes are checked before anything is allocated, by
the same functions the REST codec uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from service.codecs import v2
from service.codecs.wire import Tensor
from service.datatypes import element_count, numpy_dtype, v2_datatype
from service.errors import InvalidInput
from service.input_limits import Limits
from service.shared_memory import NO_SHARED_MEMORY, SharedMemory, Slice

# Typed `contents` field per datatype (FP16 and BF16 travel only as raw contents).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter_value(parameter: pb.InferParameter) -> Any:
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)


def _parameters(entries: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    return {key: parameter_value(value) for key, value in entries.items()}


def _typed_tensor(tensor: pb.ModelInferRequest.InferInputTensor, shape: list[int]) -> np.ndarray:
    name, datatype = tensor.name, tensor.datatype
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        numpy_dtype(datatype)  # unknown datatypes get their own message
        raise InvalidInput(f"input {name!r}: {datatype} data must be sent as raw_input_contents")
    values = getattr(tensor.contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise InvalidInput(f"input {name!r}: {len(values)} elements for shape {shape}")
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    dtype = numpy_dtype(datatype)
    try:
        return np.asarray(values, dtype=dtype).reshape(shape)
    except (ValueError, OverflowError):
        raise InvalidInput(f"input {name!r}: data does not fit datatype {datatype}") from None


def _placed(tensor: pb.ModelInferRequest.InferInputTensor, regions: SharedMemory) -> Slice | None:
    """The shared memory slice an input's parameters name, if any."""
    if not tensor.parameters:
        return None
    return regions.slice(_parameters(tensor.parameters), "input", tensor.name)


def infer_request(
    message: pb.ModelInferRequest,
    limits: Limits = v2.DEFAULT_LIMITS,
    regions: SharedMemory = NO_SHARED_MEMORY,
) -> v2.InferRequest:
    """A ModelInferRequest -> the V2 request the REST codec produces for the same call.
    Raw contents belong, in order, to the inputs not placed in shared memory."""
    if not message.inputs:
        raise InvalidInput("request needs at least one input")
    raw = message.raw_input_contents
    placed = [_placed(tensor, regions) for tensor in message.inputs]
    sent = sum(place is None for place in placed)
    if raw and len(raw) != sent:
        raise InvalidInput(
            f"{len(raw)} raw_input_contents for {sent} inputs; send one per input "
            "not in shared memory"
        )
    inputs: list[Tensor] = []
    seen: set[str] = set()
    index = 0
    for tensor, place in zip(message.inputs, placed, strict=True):
        name = tensor.name
        if name in seen:
            raise InvalidInput(f"input {name!r} appears twice")
        seen.add(name)
        shape = v2.check_shape(list(tensor.shape), name, tensor.datatype, limits)
        if place is not None and tensor.HasField("contents"):
            raise InvalidInput(
                f"unexpected 'content' provided when using shared memory for input tensor "
                f"'{name}' for model '{message.model_name}'"
            )
        if raw and tensor.HasField("contents"):
            raise InvalidInput(
                f"contents field must not be specified when using raw_input_contents for "
                f"'{name}' for model '{message.model_name}'"
            )
        if place is not None:
            data = v2.shared_tensor(name, tensor.datatype, shape, place)
        elif raw:
            data = v2.raw_tensor(name, tensor.datatype, shape, memoryview(raw[index]))
            index += 1
        else:
            data = _typed_tensor(tensor, shape)
        inputs.append(Tensor(name, tensor.datatype, shape, data))
    outputs = [_requested_output(item, regions) for item in message.outputs] or None
    return v2.InferRequest(message.id or None, inputs, outputs, _parameters(message.parameters))


def _requested_output(
    item: pb.ModelInferRequest.InferRequestedOutputTensor, regions: SharedMemory
) -> v2.RequestedOutput:
    parameters = _parameters(item.parameters)
    classes = v2.class_count(item.name, parameters.get("classification", 0))
    place = v2.output_slice(item.name, parameters, classes, regions) if parameters else None
    return v2.RequestedOutput(item.name, True, classes, place)


def infer_response(
    *,
    model_name: str,
    model_version: str,
    request: v2.InferRequest,
    outputs: Mapping[str, np.ndarray],
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request.id or ""
    )
    for item in v2.chosen_outputs(request, outputs):
        array = outputs[item.name]
        tensor = response.outputs.add()
        tensor.name = item.name
        tensor.datatype = v2_datatype(array)
        tensor.shape.extend(array.shape)
        placed = v2.shared_output(item, array)
        if placed is None:
            response.raw_output_contents.append(v2.raw_bytes(array))
            continue
        # Like Triton: an empty raw contents entry keeps every output's index.
        response.raw_output_contents.append(b"")
        tensor.parameters["shared_memory_region"].string_param = placed["shared_memory_region"]
        tensor.parameters["shared_memory_byte_size"].int64_param = placed["shared_memory_byte_size"]
    return response


def model_metadata(metadata: Mapping[str, Any]) -> pb.ModelMetadataResponse:
    """`DataPlane.model_metadata` -> ModelMetadataResponse."""

    def tensors(specs: list[dict[str, Any]]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [
            pb.ModelMetadataResponse.TensorMetadata(
                name=spec["name"], datatype=spec["datatype"], shape=spec["shape"]
            )
            for spec in specs
        ]

    return pb.ModelMetadataResponse(
        name=metadata["name"],
        versions=metadata["versions"],
        platform=metadata["platform"],
        inputs=tensors(metadata["inputs"]),
        outputs=tensors(metadata["outputs"]),
    )


def statistics_response(stats: list[dict[str, Any]]) -> pb.ModelStatisticsResponse:
    """Triton's JSON form of the statistics (`DataPlane.statistics`) as its gRPC answer."""
    from google.protobuf import json_format

    response = pb.ModelStatisticsResponse()
    json_format.ParseDict({"model_stats": stats}, response)
    return response
