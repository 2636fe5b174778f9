"""TorchServe-compatible `/predictions/{model}` and KServe V1 `:predict` routes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from service.codecs.wire import media_type, parse_json
from service.errors import InvalidInput
from service.inference import DecodedBody, InferenceResult, PredictionsBody, TensorBody
from service.native.frames import HandlerResponse
from service.processing import InstanceInputs, ModelProcessor, PayloadInputs
from service.routes.common import (
    JSON,
    JSON_NUMPY,
    credentials,
    dataplane_of,
    form_fields,
    inference_request,
    json_response,
)
from service.routes.native import handler_request, handler_response
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
    """What TorchServe users send. A model with a processor answers JSON (a list when they
    sent several rows); an archive's own handler reads the request and makes the answer,
    status included."""
    plane = dataplane_of(request)

    async def decode(processor: ModelProcessor) -> DecodedBody[bool]:
        content_type = request.headers.get("content-type", "")
        if media_type(content_type) == "multipart/form-data":
            parts = await _uploads(request)
            return DecodedBody(PayloadInputs(parts), len(parts) > 1)
        inputs, many = processor.inputs_from_body(await request.body(), content_type)
        return DecodedBody(inputs, many)

    def answer(result: InferenceResult[bool]) -> HandlerResponse:
        answers = result.model.processor.predictions(result.outputs, top_k=plane.settings.top_k)
        body = orjson.dumps(answers if result.body.wire else answers[0], option=JSON_NUMPY)
        return HandlerResponse(200, "", JSON, body, {})

    body = PredictionsBody(decode=decode, read=lambda: handler_request(request), answer=answer)
    return await plane.infer(inference_request(request, "torchserve", body), handler_response)


async def v1_predict(request: Request) -> Response:
    async def decode(processor: ModelProcessor) -> DecodedBody[None]:
        body = parse_json(await request.body(), processor.limits.max_json_strings)
        if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
            raise InvalidInput('body must be {"instances": [...]}')
        return DecodedBody(InstanceInputs(body["instances"]), None)

    def encode(result: InferenceResult[None]) -> Response:
        return json_response(
            {"predictions": result.model.processor.instance_outputs(result.outputs)}
        )

    plane = dataplane_of(request)
    return await plane.infer(inference_request(request, "v1", TensorBody(decode)), encode)


async def v1_model(request: Request) -> Response:
    name = request.path_params["model_name"]
    state = dataplane_of(request).model_ready(name, None, credentials(request))
    return json_response({"name": state.name, "ready": state.ready}, 200 if state.ready else 503)


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
