"""TorchServe-compatible `/predictions/{model}` and KServe V1 `:predict` routes."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from service.errors import InvalidInput, ServingError
from service.inference import DecodedBody, HandlerCall, InferenceResult
from service.processing import InstanceInputs, PayloadInputs, Processor, media_type, parse_json
from service.routes.common import (
    authorize_inference,
    credentials,
    dataplane_of,
    disconnected,
    form_fields,
    header_timeout_ms,
    json_response,
    serve,
    trace_context,
)
from service.routes.table import RouteSpec

PREDICTIONS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "text/plain": {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"data": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}
V1_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {"instances": {"type": "array", "items": {}}},
                }
            }
        },
    }
}


async def _uploads(request: Request) -> list[bytes]:
    """Files (or plain fields) of a multipart form, in order."""
    parts = [field.value for field in await form_fields(request)]
    if not parts:
        raise InvalidInput("multipart body holds no file")
    return parts


async def predictions(request: Request) -> Response:
    """What TorchServe users send; the answer is a list when they sent several rows."""
    if dataplane_of(request).settings.backend == "torchserve-native":
        return await handler_predictions(request)

    async def decode(processor: Processor) -> DecodedBody[bool]:
        content_type = request.headers.get("content-type", "")
        if media_type(content_type) == "multipart/form-data":
            parts = await _uploads(request)
            return DecodedBody(PayloadInputs(parts), len(parts) > 1)
        inputs, many = processor.inputs_from_body(await request.body(), content_type)
        return DecodedBody(inputs, many)

    def encode(result: InferenceResult[bool]) -> Response:
        top_k = dataplane_of(request).settings.top_k
        answers = result.model.processor.predictions(result.outputs, top_k=top_k)
        return json_response(answers if result.body.wire else answers[0])

    return await serve(request, "torchserve", decode, encode)


async def handler_predictions(request: Request) -> Response:
    """`torchserve-native`: the archive's handler reads the request and makes the answer,
    status included; the gateway's own errors take TorchServe's error form too."""
    from service.native.frames import HandlerResponse
    from service.routes.native import handler_request, torchserve_error

    plane = dataplane_of(request)

    def encode(answer: HandlerResponse) -> Response:
        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-type"}
        return Response(
            answer.body,
            status_code=answer.status,
            media_type=answer.content_type or None,
            headers=headers,
        )

    try:
        call = HandlerCall(
            protocol="torchserve",
            model=request.path_params["model_name"],
            version=request.path_params.get("version"),
            read=lambda: handler_request(request),
            credentials=credentials(request),
            timeout_ms=header_timeout_ms(request),
            disconnected=lambda: disconnected(request),
            trace_context=trace_context(request) if plane.tracing is not None else None,
        )
        return await plane.serve_handler(call, encode)
    except ServingError as error:
        return torchserve_error(error)


async def v1_predict(request: Request) -> Response:
    async def decode(_processor: Processor) -> DecodedBody[None]:
        body = parse_json(await request.body())
        if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
            raise InvalidInput('body must be {"instances": [...]}')
        return DecodedBody(InstanceInputs(body["instances"]), None)

    def encode(result: InferenceResult[None]) -> Response:
        return json_response(
            {"predictions": result.model.processor.instance_outputs(result.outputs)}
        )

    return await serve(request, "v1", decode, encode)


async def v1_model(request: Request) -> Response:
    authorize_inference(request)
    model = dataplane_of(request).repository.get(request.path_params["model_name"])
    return json_response({"name": model.name, "ready": model.ready}, 200 if model.ready else 503)


def routes() -> list[RouteSpec]:
    torchserve = ("TorchServe-compatible",)
    v1 = ("KServe V1",)
    return [
        RouteSpec(
            "/predictions/{model_name}",
            predictions,
            ("POST",),
            "Predict (TorchServe style)",
            torchserve,
            PREDICTIONS_BODY,
            hot=True,
        ),
        RouteSpec(
            "/predictions/{model_name}/{version}",
            predictions,
            ("POST",),
            "Predict with a version",
            torchserve,
            PREDICTIONS_BODY,
            hot=True,
        ),
        RouteSpec(
            "/v1/models/{model_name}:predict",
            v1_predict,
            ("POST",),
            "Predict (KServe V1)",
            v1,
            V1_BODY,
            hot=True,
        ),
        RouteSpec("/v1/models/{model_name}", v1_model, ("GET",), "Model status (KServe V1)", v1),
    ]
