"""HTTP <-> TorchServe's request form, for archives served by their own handlers.

The request is cut up as TorchServe's front end cuts it: every query argument is a parameter,
then either each field of a form (multipart or url-encoded) or the whole body as the
parameter `body` with the request's media type; every header goes along, names in lower case.
Errors the gateway raises on this route are written in TorchServe's error form.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from service.errors import InvalidInput, ServingError
from service.native.frames import HandlerRequest, Parameter
from service.native.serving import (
    TORCHSERVE_ERROR_TYPES,
    next_request_id,
    torchserve_error_body,
)
from service.processing import media_type

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def handler_request(request: Request) -> HandlerRequest:
    parameters = [
        Parameter(name, value.encode("utf-8")) for name, value in request.query_params.multi_items()
    ]
    kind = media_type(request.headers.get("content-type", ""))
    if kind in FORM_TYPES:
        parameters += await _form_fields(request)
    else:
        parameters.append(Parameter("body", await request.body(), kind))
    headers = tuple((name.lower(), value) for name, value in request.headers.items())
    return HandlerRequest(next_request_id(), tuple(parameters), headers)


async def _form_fields(request: Request) -> list[Parameter]:
    try:
        form = await request.form()
    except Exception as error:  # malformed multipart
        raise InvalidInput(f"cannot parse the form body: {error}") from None
    try:
        fields: list[Parameter] = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                fields.append(Parameter(name, await value.read(), value.content_type or ""))
            else:
                fields.append(Parameter(name, value.encode("utf-8")))
        return fields
    finally:
        await form.close()


def torchserve_error(error: ServingError) -> Response:
    kind = TORCHSERVE_ERROR_TYPES.get(error.status_code)
    body = torchserve_error_body(error.status_code, error.message, kind)
    return Response(body, error.status_code, media_type="application/json", headers=error.headers)
