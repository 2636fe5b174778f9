"""TorchServe request bodies -> model feeds, and model outputs -> response bodies.

TorchServe hands a handler one dict per request: parameter name -> value, where the value is
already parsed JSON (`application/json`), a `str` (`text/*`) or a `bytearray` (anything else);
a multipart form gives one parameter per part. This module maps those onto the gateway's
`Processor` exactly as the gateway's `/predictions` route maps HTTP bodies, so both paths give
the same answers. It imports neither torch nor TorchServe and is unit-tested on its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from service.backends.tensor_payload import CONTENT_TYPE as TENSORS_CONTENT_TYPE
from service.backends.tensor_payload import decode_feed, encode_feed
from service.codecs.wire import JSON_MEDIA_TYPE, Tensor, media_type
from service.datatypes import v2_datatype
from service.errors import InvalidInput, ServingError
from service.feeds import Feed
from service.processing import InstanceInputs, PayloadInputs, Processor

JSON_CONTENT_TYPE = JSON_MEDIA_TYPE
__all__ = ["Decoded", "decode_request", "encode_answer", "error_body", "media_type"]

AnswerKind = Literal["tensors", "one", "many"]
"""`tensors`: raw outputs as a safetensors payload; `one`: one prediction; `many`: a list of predictions."""


@dataclass(frozen=True, slots=True)
class Decoded:
    feed: Feed
    answer: AnswerKind


def decode_request(
    processor: Processor, parameters: Mapping[str, Any], content_types: Mapping[str, str]
) -> Decoded:
    """One TorchServe request (its parameters and their content types) -> feed and answer kind."""
    if not parameters:
        raise InvalidInput("request body is empty")
    if len(parameters) > 1:
        # A multipart form with several parts: one row per part, answered with a list.
        parts = PayloadInputs([_as_bytes(value) for value in parameters.values()])
        return Decoded(processor.feed(parts), "many")
    ((name, value),) = parameters.items()
    content_type = content_types.get(name, "")
    kind = media_type(content_type)
    if kind == TENSORS_CONTENT_TYPE:
        return Decoded(feed_from_tensor_payload(processor, _as_bytes(value)), "tensors")
    # TorchServe hands JSON already parsed and text as `str`; the rest is the body's bytes, read
    # exactly as the gateway's `/predictions` route reads it.
    if isinstance(value, bytes | bytearray | memoryview):
        inputs, many = processor.inputs_from_body(bytes(value), content_type)
    elif isinstance(value, str) and kind != JSON_MEDIA_TYPE:
        inputs, many = processor.inputs_from_body(value.encode("utf-8"), "text/plain")
    else:
        instances, many = processor.instances_from_json(value)
        inputs = InstanceInputs(instances)
    return Decoded(processor.feed(inputs), "many" if many else "one")


def feed_from_tensor_payload(processor: Processor, payload: bytes) -> Feed:
    """A pre-batched safetensors payload -> feed, checked against the manifest like V2 tensors."""
    arrays = decode_feed(payload)
    tensors = [
        Tensor(name, v2_datatype(array), list(array.shape), array) for name, array in arrays.items()
    ]
    return processor.feed_from_tensors(tensors)


def encode_answer(
    processor: Processor, outputs: Feed, answer: AnswerKind, *, top_k: int
) -> tuple[bytes, str]:
    """Outputs of one request -> (response body, content type)."""
    if answer == "tensors":
        return encode_feed(outputs), TENSORS_CONTENT_TYPE
    predictions = processor.predictions(outputs, top_k=top_k)
    body = predictions if answer == "many" else predictions[0]
    return json.dumps(body).encode("utf-8"), JSON_CONTENT_TYPE


def error_body(error: ServingError) -> bytes:
    """TorchServe's own error envelope, so clients parse handler and server errors alike."""
    envelope = {"code": error.status_code, "type": type(error).__name__, "message": error.message}
    return json.dumps(envelope).encode("utf-8")


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    # A JSON part of a multipart form arrives parsed; re-encode it as the bytes that were sent.
    return json.dumps(value).encode("utf-8")
