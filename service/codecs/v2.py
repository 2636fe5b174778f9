"""Open Inference Protocol (V2) REST codec: JSON and the binary tensor data extension.

Requests may be plain JSON (with or without a Content-Type, as stock `tritonclient` sends) or a
JSON header of `Inference-Header-Content-Length` bytes followed by the raw tensors named by
`parameters.binary_data_size`. Responses put an output in binary when it asks for
`binary_data`, or when the request set `binary_data_output` and named no outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.codecs.wire import Tensor, check_json_strings
from service.datatypes import (
    decode_bytes_elements,
    element_count,
    encode_bytes_elements,
    numpy_dtype,
    v2_datatype,
)
from service.errors import InvalidInput
from service.input_limits import Limits
from service.sequences import SequenceParameters, sequence_parameters
from service.shared_memory import NO_SHARED_MEMORY, SharedMemory, Slice

HEADER_LENGTH = "inference-header-content-length"
MAX_ELEMENTS = 64 * 1024 * 1024
"""Largest tensor (elements) a request may declare; checked before any allocation."""
MAX_DIMS = 64
"""Most dimensions a tensor may declare (numpy's own limit: more would raise on reshape)."""


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int = 0
    """The classification extension: answer the top k classes instead (0: the tensor)."""
    shared_memory: Slice | None = None
    """Write the output there instead of into the answer (system shared memory)."""


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def priority(self) -> int:
        """The `priority` request parameter (0 when absent)."""
        value = self.parameters.get("priority", 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput("parameter 'priority' must be a whole number >= 0")
        return value

    @property
    def classification(self) -> dict[str, int]:
        """Output name -> the number of top classes asked for (the classification extension)."""
        return {
            item.name: item.classification for item in self.outputs or () if item.classification
        }

    @property
    def binary_output_default(self) -> bool:
        return bool(self.parameters.get("binary_data_output", False))

    @property
    def sequence(self) -> SequenceParameters | None:
        """The sequence extension's `sequence_id`, `sequence_start` and `sequence_end`."""
        return sequence_parameters(self.parameters)

    @property
    def timeout_ms(self) -> float | None:
        """The `timeout` parameter (microseconds, as tritonclient sends it) in milliseconds."""
        value = self.parameters.get("timeout")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise InvalidInput("parameter 'timeout' must be a positive number of microseconds")
        return float(value) / 1000.0


def _loads(body: bytes, end: int, limits: Limits) -> Any:
    check_json_strings(body, limits.max_json_strings, end)
    try:
        return orjson.loads(memoryview(body)[:end])
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"request body is not valid JSON: {error}") from None


DEFAULT_LIMITS = Limits()


def check_shape(
    value: Any, name: str, datatype: str = "", limits: Limits = DEFAULT_LIMITS
) -> list[int]:
    """A declared shape, checked (and its element count bounded) before anything is allocated
    or decoded: the one place the element limits apply, for REST and gRPC alike."""
    if not isinstance(value, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in value
    ):
        raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers")
    if len(value) > MAX_DIMS:
        raise InvalidInput(
            f"input {name!r}: shape has {len(value)} dimensions; at most {MAX_DIMS} are accepted"
        )
    # Zero-size dimensions count as 1: numpy refuses [0, 2**62] ("array is too big") even
    # though it holds no element, so every dimension must fit the element bound on its own.
    if element_count([max(dim, 1) for dim in value]) > MAX_ELEMENTS:
        raise InvalidInput(
            f"input {name!r}: shape {value} is larger than the server accepts "
            f"(at most {MAX_ELEMENTS} elements, counting a 0 dimension as 1)"
        )
    if datatype == "BYTES" and element_count(value) > limits.max_bytes_elements:
        raise InvalidInput(
            f"input {name!r}: shape {value} holds {element_count(value)} BYTES elements; "
            f"the limit is {limits.max_bytes_elements}"
        )
    return value


def _flatten_strings(data: Any, name: str, shape: list[int], count: int) -> list[Any]:
    """The nested JSON lists' leaves, in order; stops at the first one past `count` (the shape
    is bounded, the data is not)."""
    flat: list[Any] = []
    stack = [iter([data])]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        elif len(flat) == count:
            raise InvalidInput(f"input {name!r}: more than {count} elements for shape {shape}")
        else:
            flat.append(item)
    if len(flat) != count:
        raise InvalidInput(f"input {name!r}: {len(flat)} elements for shape {shape}")
    return flat


_END = object()


def _json_tensor(name: str, datatype: str, shape: list[int], data: Any) -> np.ndarray:
    count = element_count(shape)
    if datatype == "BYTES":
        items = _flatten_strings(data, name, shape, count)
        encoded = []
        for item in items:
            if not isinstance(item, str):
                raise InvalidInput(f"input {name!r}: BYTES elements in JSON must be strings")
            encoded.append(item.encode("utf-8"))
        array = np.empty(count, dtype=object)
        array[:] = encoded
        return array.reshape(shape)
    dtype = numpy_dtype(datatype)
    try:
        if isinstance(data, list) and data and not isinstance(data[0], list):
            # Flat data (what tritonclient sends): fromiter is 1.2x asarray's speed (784
            # pixels, interleaved runs), which first scans the list for nesting; same errors.
            array = np.fromiter(data, dtype=dtype, count=len(data))
        else:
            array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"input {name!r}: data does not fit datatype {datatype}") from None
    if array.size != count:
        raise InvalidInput(f"input {name!r}: {array.size} elements for shape {shape}")
    return array.reshape(shape)


def raw_tensor(name: str, datatype: str, shape: list[int], raw: memoryview) -> np.ndarray:
    """A tensor from its raw little-endian bytes (REST binary extension, gRPC raw contents)."""
    count = element_count(shape)
    if datatype == "BYTES":
        if len(raw) < 4 * count:  # each element has a 4-byte length prefix
            raise InvalidInput(
                f"input {name!r}: {len(raw)} bytes cannot hold {count} BYTES elements"
            )
        array = np.empty(count, dtype=object)
        array[:] = decode_bytes_elements(raw, count)
        return array.reshape(shape)
    dtype = numpy_dtype(datatype)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"input {name!r}: {len(raw)} bytes of data for shape {shape} of {datatype}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def shared_tensor(name: str, datatype: str, shape: list[int], place: Slice) -> np.ndarray:
    """A tensor from a shared memory slice: its raw bytes, decoded as binary data is, then
    copied out, so nothing the model computes on stays mapped."""
    with place.view() as view:
        array = raw_tensor(name, datatype, shape, view)
        owned = array if array.dtype == object else array.copy()
        del array  # the view is released on leaving the block: drop what points into it
    return owned


def output_slice(
    name: str, parameters: Mapping[str, Any], classification: int, regions: SharedMemory
) -> Slice | None:
    """Where a requested output goes in shared memory, if its parameters say so."""
    place = regions.slice(parameters, "output", name)
    if place is not None and classification:
        raise InvalidInput("Output can't set both 'shared_memory_region' and 'classification'")
    if place is not None and parameters.get("binary_data") is True:
        raise InvalidInput("Output can't set both 'shared_memory_region' and 'binary_data'")
    return place


def decode_request(
    body: bytes,
    header_length: str | None,
    limits: Limits = DEFAULT_LIMITS,
    regions: SharedMemory = NO_SHARED_MEMORY,
) -> InferRequest:
    """Parse a V2 infer request body (JSON, or JSON header + binary tensors)."""
    view = memoryview(body)
    if header_length is None:
        header, blobs = _loads(body, len(body), limits), view[len(view) :]
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise InvalidInput("Inference-Header-Content-Length must be an integer") from None
        if not 0 < length <= len(view):
            raise InvalidInput(
                f"Inference-Header-Content-Length {length} does not fit a body of {len(view)} bytes"
            )
        header, blobs = _loads(body, length, limits), view[length:]
    if not isinstance(header, dict):
        raise InvalidInput("request must be a JSON object")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("request needs a non-empty 'inputs' list")
    inputs: list[Tensor] = []
    offset = 0
    seen: set[str] = set()
    for raw in raw_inputs:
        if not isinstance(raw, dict):
            raise InvalidInput("each input must be an object")
        name, datatype = raw.get("name"), raw.get("datatype")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise InvalidInput("each input needs a string 'name' and 'datatype'")
        if name in seen:
            raise InvalidInput(f"input {name!r} appears twice")
        seen.add(name)
        shape = check_shape(raw.get("shape"), name, datatype, limits)
        parameters = raw.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput(f"input {name!r}: parameters must be an object")
        size = parameters.get("binary_data_size")
        place = regions.slice(parameters, "input", name) if parameters else None
        if place is not None:
            if size is not None or "data" in raw:
                raise InvalidInput(
                    f"input {name!r}: set only one of 'data', 'binary_data_size' and "
                    "'shared_memory_region'"
                )
            data = shared_tensor(name, datatype, shape, place)
        elif size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidInput(f"input {name!r}: binary_data_size must be a byte count")
            if offset + size > len(blobs):
                raise InvalidInput(f"input {name!r}: binary data is truncated")
            data = raw_tensor(name, datatype, shape, blobs[offset : offset + size])
            offset += size
        elif "data" in raw:
            data = _json_tensor(name, datatype, shape, raw["data"])
        else:
            raise InvalidInput(f"input {name!r} has neither 'data' nor binary_data_size")
        inputs.append(Tensor(name, datatype, shape, data))
    if offset != len(blobs):
        raise InvalidInput(f"{len(blobs) - offset} bytes of binary data belong to no input")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    params = header.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput("'parameters' must be an object")
    outputs = _requested_outputs(header.get("outputs"), regions)
    return InferRequest(request_id, inputs, outputs, params)


def _requested_outputs(raw: Any, regions: SharedMemory) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInput("'outputs' must be a list")
    requested = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput("each requested output needs a 'name'")
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput("output parameters must be an object")
        classes = class_count(item["name"], parameters.get("classification", 0))
        requested.append(
            RequestedOutput(
                item["name"],
                bool(parameters.get("binary_data", False)),
                classes,
                output_slice(item["name"], parameters, classes, regions) if parameters else None,
            )
        )
    return requested


def class_count(name: str, value: Any) -> int:
    """The `classification` parameter of a requested output: a whole number of classes."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"output {name!r}: 'classification' must be a whole number >= 0")
    return value


def chosen_outputs(
    request: InferRequest, outputs: Mapping[str, np.ndarray]
) -> list[RequestedOutput]:
    """The outputs to answer with: those requested (all of them known), else every output."""
    if request.outputs is None:
        return [RequestedOutput(name, request.binary_output_default) for name in outputs]
    unknown = [item.name for item in request.outputs if item.name not in outputs]
    if unknown:
        raise InvalidInput(f"unknown outputs requested: {unknown}; model has {list(outputs)}")
    return request.outputs


def shared_output(item: RequestedOutput, array: np.ndarray) -> dict[str, Any] | None:
    """Write an output its request placed in shared memory (encoded as binary data is);
    the parameters its answer carries instead of data. None when it was not placed there."""
    if item.shared_memory is None:
        return None
    blob = raw_bytes(array)
    item.shared_memory.write(blob)
    return {
        "shared_memory_region": item.shared_memory.region.name,
        "shared_memory_byte_size": len(blob),
    }


def raw_bytes(array: np.ndarray) -> bytes:
    """A tensor's raw little-endian bytes (BYTES elements length-prefixed)."""
    if array.dtype == object:
        return encode_bytes_elements(list(array.reshape(-1)))
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _json_strings(name: str, array: np.ndarray) -> list[str]:
    """BYTES elements as JSON strings: they must be UTF-8 (JSON holds text); anything else
    travels byte-exact in binary (`binary_data: true`)."""
    try:
        return [item.decode("utf-8") for item in array.reshape(-1)]
    except UnicodeDecodeError:
        raise InvalidInput(
            f"output {name!r} holds bytes that are not UTF-8, which JSON cannot carry: "
            "ask for it as binary data (parameters.binary_data: true)"
        ) from None


def encode_response(
    *,
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: Mapping[str, np.ndarray],
) -> tuple[bytes, int | None]:
    """Serialize a V2 response. Returns the body and the JSON header length when binary."""
    chosen = chosen_outputs(request, outputs)
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for item in chosen:
        array = outputs[item.name]
        datatype = v2_datatype(array)
        tensor: dict[str, Any] = {
            "name": item.name,
            "datatype": datatype,
            "shape": list(array.shape),
        }
        placed = shared_output(item, array)
        if placed is not None:
            tensor["parameters"] = placed
        elif item.binary:
            blob = raw_bytes(array)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif array.dtype == object:
            tensor["data"] = _json_strings(item.name, array)
        else:
            tensor["data"] = array.reshape(-1)
        tensors.append(tensor)
    body: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": tensors,
    }
    if request.id is not None:
        body["id"] = request.id
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
