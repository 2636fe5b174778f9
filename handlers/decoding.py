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
from service.datatypes import v2_datatype
from service.errors import InvalidInput, ServingError
from service.feeds import Feed, merge
from service.processing import Processor, Tensor

JSON_CONTENT_TYPE = "application/json"

AnswerKind = Literal["tensors", "one", "many"]
"""`tensors`: raw outputs as `.npz`; `one`: one prediction; `many`: a list of predictions."""


@dataclass(frozen=True, slots=True)
class Decoded:
    feed: Feed
    answer: AnswerKind


def media_type(content_type: str) -> str:
    """`Text/Plain; charset=utf-8` -> `text/plain`."""
    return content_type.split(";", 1)[0].strip().lower()


def decode_request(
    processor: Processor, parameters: Mapping[str, Any], content_types: Mapping[str, str]
) -> Decoded:
    """One TorchServe request (its parameters and their content types) -> feed and answer kind."""
    if not parameters:
        raise InvalidInput("request body is empty")
    if len(parameters) > 1:
        # A multipart form with several parts: one row per part, answered with a list.
        feeds = [processor.feed_from_payload(_as_bytes(value)) for value in parameters.values()]
        merged, _rows = merge(feeds)
        return Decoded(merged, "many")
    ((name, value),) = parameters.items()
    content_type = media_type(content_types.get(name, ""))
    if content_type == TENSORS_CONTENT_TYPE:
        return Decoded(feed_from_tensor_payload(processor, _as_bytes(value)), "tensors")
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        if not raw:
            raise InvalidInput("request body is empty")
        if content_type == JSON_CONTENT_TYPE or (not content_type and raw[:1] in (b"{", b"[")):
            return _from_json(processor, _parse_json(raw))
        return Decoded(processor.feed_from_payload(raw), "one")
    if isinstance(value, str) and content_type != JSON_CONTENT_TYPE:
        if not value:
            raise InvalidInput("request body is empty")
        return Decoded(processor.feed_from_payload(value.encode("utf-8")), "one")
    return _from_json(processor, value)


def feed_from_tensor_payload(processor: Processor, payload: bytes) -> Feed:
    """A pre-batched `.npz` payload -> feed, checked against the manifest like V2 tensors."""
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


def _from_json(processor: Processor, body: Any) -> Decoded:
    feed, many = processor.feed_from_json(body)
    return Decoded(feed, "many" if many else "one")


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInput(f"request body is not valid JSON: {error}") from None


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    # A JSON part of a multipart form arrives parsed; re-encode it as the bytes that were sent.
    return json.dumps(value).encode("utf-8")
