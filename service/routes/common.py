"""HTTP pieces every route shares: JSON responses, credentials, the request deadline header,
client disconnects, form fields, and the envelope of an inference request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from service.auth import bearer_token
from service.dataplane import DataPlane
from service.errors import InvalidInput
from service.inference import AnswerT, InferenceRequest, RequestBody
from service.tracing import TRACE_HEADERS

JSON = "application/json"
JSON_NUMPY = orjson.OPT_SERIALIZE_NUMPY
TIMEOUT_HEADER = "x-request-timeout-ms"


def json_response(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    body = orjson.dumps(content, option=JSON_NUMPY)
    return Response(body, status_code=status_code, media_type=JSON, headers=headers)


def dataplane_of(request: Request) -> DataPlane:
    plane: DataPlane = request.app.state.dataplane
    return plane


def credentials(request: Request) -> str | None:
    return bearer_token(request.headers.get("authorization"))


def header_timeout_ms(request: Request) -> float | None:
    """`X-Request-Timeout-Ms` -> milliseconds."""
    value = request.headers.get(TIMEOUT_HEADER)
    if value is None:
        return None
    try:
        timeout = float(value)
    except ValueError:
        raise InvalidInput("X-Request-Timeout-Ms must be a number of milliseconds") from None
    if not timeout > 0:
        raise InvalidInput("X-Request-Timeout-Ms must be positive")
    return timeout


def trace_context(request: Request) -> dict[str, str]:
    headers = request.headers
    return {name: headers[name] for name in TRACE_HEADERS if name in headers}


async def disconnected(request: Request) -> None:
    """Returns once the client has gone (call only after the body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def inference_request(
    request: Request, protocol: str, body: RequestBody[AnswerT]
) -> InferenceRequest[AnswerT]:
    """The envelope of one HTTP inference request: what is known before its body is read."""
    plane = dataplane_of(request)
    return InferenceRequest(
        protocol=protocol,
        model=request.path_params["model_name"],
        version=request.path_params.get("version"),
        body=body,
        credentials=credentials(request),
        timeout_ms=header_timeout_ms(request),
        disconnected=lambda: disconnected(request),
        trace_context=trace_context(request) if plane.traced else None,
    )


@dataclass(frozen=True, slots=True)
class FormField:
    name: str
    value: bytes
    content_type: str
    """The part's content type ('' for a plain field)."""


async def form_fields(request: Request) -> list[FormField]:
    """Every field of a multipart or url-encoded form, files read, in order."""
    try:
        form = await request.form()
    except Exception as error:  # malformed multipart
        raise InvalidInput(f"cannot parse the form body: {error}") from None
    try:
        fields: list[FormField] = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                fields.append(FormField(name, await value.read(), value.content_type or ""))
            else:
                fields.append(FormField(name, value.encode("utf-8"), ""))
        return fields
    finally:
        await form.close()
