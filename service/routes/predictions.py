"""TorchServe-compatible `/predictions/{model}` and KServe V1 `:predict` routes."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from service.dataplane import DataPlane, timeout_from_header
from service.errors import InvalidInput
from service.feeds import Feed, merge
from service.processing import Processor
from service.routes.common import (
    authorize_inference,
    dataplane_of,
    infer_unless_disconnected,
    json_response,
    serve,
)

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


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"request body is not valid JSON: {error}") from None


async def _uploads(request: Request) -> list[bytes]:
    """Files (or plain fields) of a multipart form, in order."""
    try:
        form = await request.form()
    except Exception as error:  # malformed multipart
        raise InvalidInput(f"cannot parse multipart body: {error}") from None
    try:
        parts: list[bytes] = []
        for _key, value in form.multi_items():
            if isinstance(value, UploadFile):
                parts.append(await value.read())
            else:
                parts.append(value.encode("utf-8"))
    finally:
        await form.close()
    if not parts:
        raise InvalidInput("multipart body holds no file")
    return parts


async def _feed_from_request(request: Request, processor: Processor) -> tuple[Feed, bool]:
    """What TorchServe users send -> (feed, whether to answer with a list)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        parts = await _uploads(request)
        feeds = await asyncio.to_thread(lambda: [processor.feed_from_payload(p) for p in parts])
        merged, _rows = merge(feeds)
        return merged, len(parts) > 1
    body = await request.body()
    if not body:
        raise InvalidInput("request body is empty")
    if content_type == "application/json" or (not content_type and body[:1] in (b"{", b"[")):
        return processor.feed_from_json(_parse_json(body))
    return await asyncio.to_thread(processor.feed_from_payload, body), False


def build_router() -> APIRouter:
    router = APIRouter()

    async def predictions(request: Request, model_name: str, version: str | None) -> Response:
        async def handle(plane: DataPlane) -> Response:
            model = plane.model(model_name, version)
            assert model.processor is not None
            feed, many = await _feed_from_request(request, model.processor)
            deadline = plane.deadline(
                timeout_from_header(request.headers.get("x-request-timeout-ms"))
            )
            outputs = await infer_unless_disconnected(request, model, feed, deadline)
            answers = model.processor.predictions(outputs, top_k=plane.settings.top_k)
            return json_response(answers if many else answers[0])

        return await serve(request, "torchserve", model_name, version, handle)

    async def latest(request: Request, model_name: str) -> Response:
        return await predictions(request, model_name, None)

    async def versioned(request: Request, model_name: str, version: str) -> Response:
        return await predictions(request, model_name, version)

    router.add_api_route(
        "/predictions/{model_name}",
        latest,
        methods=["POST"],
        tags=["TorchServe-compatible"],
        summary="Predict (TorchServe style)",
        openapi_extra=PREDICTIONS_BODY,
    )
    router.add_api_route(
        "/predictions/{model_name}/{version}",
        versioned,
        methods=["POST"],
        tags=["TorchServe-compatible"],
        summary="Predict with a version",
        openapi_extra=PREDICTIONS_BODY,
    )

    async def v1_predict(request: Request, model_name: str) -> Response:
        async def handle(plane: DataPlane) -> Response:
            model = plane.model(model_name)
            assert model.processor is not None
            body = _parse_json(await request.body())
            if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
                raise InvalidInput('body must be {"instances": [...]}')
            feed = await asyncio.to_thread(model.processor.feed_from_instances, body["instances"])
            deadline = plane.deadline(
                timeout_from_header(request.headers.get("x-request-timeout-ms"))
            )
            outputs = await infer_unless_disconnected(request, model, feed, deadline)
            return json_response({"predictions": model.processor.instance_outputs(outputs)})

        return await serve(request, "v1", model_name, None, handle)

    async def v1_model(request: Request, model_name: str) -> Response:
        authorize_inference(request)
        model = dataplane_of(request).repository.get(model_name)
        return json_response(
            {"name": model.name, "ready": model.ready}, 200 if model.ready else 503
        )

    router.add_api_route(
        "/v1/models/{model_name}:predict",
        v1_predict,
        methods=["POST"],
        tags=["KServe V1"],
        summary="Predict (KServe V1)",
        openapi_extra=V1_BODY,
    )
    router.add_api_route(
        "/v1/models/{model_name}",
        v1_model,
        methods=["GET"],
        tags=["KServe V1"],
        summary="Model status (KServe V1)",
    )
    return router
