"""HTTP <-> TorchServe's request form, for archives served by their own handlers.

The request is cut up as TorchServe's front end cuts it: every query argument is a parameter,
then either each field of a form (multipart or url-encoded) or the whole body as the
parameter `body` with the request's media type; every header goes along, names in lower case.
The handler's answer goes back as it made it.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from service.codecs.wire import media_type
from service.native.frames import HandlerRequest, HandlerResponse, Parameter, next_request_id
from service.routes.common import form_fields

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def handler_request(request: Request) -> HandlerRequest:
    parameters = [
        Parameter(name, value.encode("utf-8")) for name, value in request.query_params.multi_items()
    ]
    kind = media_type(request.headers.get("content-type", ""))
    if kind in FORM_TYPES:
        parameters += [
            Parameter(field.name, field.value, field.content_type)
            for field in await form_fields(request)
        ]
    else:
        parameters.append(Parameter("body", await request.body(), kind))
    headers = tuple((name.lower(), value) for name, value in request.headers.items())
    return HandlerRequest(next_request_id(), tuple(parameters), headers)


def handler_response(answer: HandlerResponse) -> Response:
    """A handler's answer as it made it: status, content type, headers and body."""
    headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-type"}
    return Response(
        answer.body,
        status_code=answer.status,
        media_type=answer.content_type or None,
        headers=headers,
    )
