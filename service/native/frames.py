"""TorchServe's front-end <-> worker frames, written and read from the front end's side.

The worker (`ts.protocol.otf_message_handler`) reads a load command (`L`) and inference
commands (`I`, a batch of requests: id, headers, parameters) and answers each with a status,
a message and, for inference, one prediction per request (content type, HTTP status and reason,
response headers, body). Every integer is a big-endian int32; strings and bytes are
length-prefixed; lists end with -1.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

_INT = struct.Struct("!i")
END_OF_LIST = -1


@dataclass(frozen=True, slots=True)
class Parameter:
    """One request parameter: the body, a multipart part, or a query argument."""

    name: str
    value: bytes
    content_type: str = ""


@dataclass(frozen=True, slots=True)
class HandlerRequest:
    """One client request as the handler sees it (TorchServe's `RequestInput`)."""

    request_id: str
    parameters: tuple[Parameter, ...]
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class HandlerResponse:
    """One prediction: what the handler returned for one request, and what it set on it."""

    status: int
    reason: str
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkerReply:
    """A worker's answer to one command: the batch status, and a prediction per request."""

    code: int
    message: str
    predictions: list[HandlerResponse]


_request_ids = itertools.count()


def next_request_id() -> str:
    """A request id for TorchServe's frames, unique in this process."""
    return f"gw-{next(_request_ids)}"


def _string(value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return _INT.pack(len(raw)) + raw


def encode_load(
    *,
    model_name: str,
    model_path: str,
    batch_size: int,
    handler: str,
    gpu_id: int | None,
    envelope: str = "",
    limit_max_image_pixels: bool = True,
) -> bytes:
    """The `L` command: load `handler` from the extracted archive at `model_path`."""
    return b"".join(
        (
            b"L",
            _string(model_name),
            _string(model_path),
            _INT.pack(batch_size),
            _string(handler),
            _INT.pack(-1 if gpu_id is None else gpu_id),
            _string(envelope),
            struct.pack("!?", limit_max_image_pixels),
        )
    )


def encode_predict(batch: Iterable[HandlerRequest]) -> bytes:
    """The `I` command: one batch of requests."""
    parts = [b"I"]
    for request in batch:
        parts.append(_string(request.request_id))
        for name, value in request.headers:
            parts += (_string(name), _string(value))
        parts.append(_INT.pack(END_OF_LIST))
        for parameter in request.parameters:
            parts += (
                _string(parameter.name),
                _string(parameter.content_type),
                _string(parameter.value),
            )
        parts.append(_INT.pack(END_OF_LIST))
    parts.append(_INT.pack(END_OF_LIST))
    return b"".join(parts)


async def _int(reader: asyncio.StreamReader) -> int:
    value: int = _INT.unpack(await reader.readexactly(4))[0]
    return value


async def _bytes(reader: asyncio.StreamReader) -> bytes:
    length = await _int(reader)
    return await reader.readexactly(length) if length > 0 else b""


async def read_reply(reader: asyncio.StreamReader) -> WorkerReply:
    """One reply; raises `asyncio.IncompleteReadError` when the worker went away."""
    code = await _int(reader)
    message = (await _bytes(reader)).decode("utf-8", "replace")
    predictions: list[HandlerResponse] = []
    while True:
        length = await _int(reader)
        if length == END_OF_LIST:
            return WorkerReply(code, message, predictions)
        await reader.readexactly(length)  # the request id: replies keep the batch's order
        content_type = (await _bytes(reader)).decode("utf-8", "replace")
        status = await _int(reader)
        reason = (await _bytes(reader)).decode("utf-8", "replace")
        headers: dict[str, str] = {}
        for _ in range(await _int(reader)):
            key = (await _bytes(reader)).decode("utf-8", "replace")
            headers[key] = (await _bytes(reader)).decode("utf-8", "replace")
        body = await _bytes(reader)
        predictions.append(HandlerResponse(status, reason, content_type, body, headers))
