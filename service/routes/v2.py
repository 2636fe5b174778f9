"""Open Inference Protocol (V2) REST routes."""

from __future__ import annotations

import zlib
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from service.codecs import v2
from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from service.inference import DecodedBody, InferenceResult, TensorBody, v2_body
from service.processing import ModelProcessor
from service.routes.common import credentials, dataplane_of, inference_request, json_response
from service.routes.table import RouteSpec

INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "datatype", "shape"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "datatype": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "parameters": {"type": "object"},
                                    "data": {},
                                },
                            },
                        },
                        "outputs": {"type": "array", "items": {"type": "object"}},
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Outputs: JSON, or a JSON header plus binary tensors",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """tritonclient may gzip/deflate its request; inflate within the body limit."""
    if encoding is None or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"unsupported Content-Encoding {encoding!r}")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise InvalidInput(f"body is not valid {encoding}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body exceeds {limit} bytes")
    return data


async def server_metadata(request: Request) -> Response:
    return json_response(dataplane_of(request).server_metadata(credentials(request)))


async def model_metadata(request: Request) -> Response:
    name, version = _model_params(request)
    plane = dataplane_of(request)
    return json_response(plane.model_metadata(name, version, credentials(request)))


async def model_ready(request: Request) -> Response:
    name, version = _model_params(request)
    state = dataplane_of(request).model_ready(name, version, credentials(request))
    body = {"name": state.name, "version": state.version, "ready": state.ready}
    return json_response(body, 200 if state.ready else 503)


async def model_config(request: Request) -> Response:
    """Triton's model configuration extension: the completed configuration, Triton's JSON."""
    from service.triton.json_form import config_json

    name, version = _model_params(request)
    config = dataplane_of(request).model_config(name, version, credentials(request))
    return json_response(config_json(config))


async def statistics(request: Request) -> Response:
    """Triton's statistics extension: every model, one model, or one version."""
    name, version = _model_params(request) if "model_name" in request.path_params else (None, None)
    stats = dataplane_of(request).statistics(name, version, credentials(request))
    return json_response({"model_stats": stats})


async def infer(request: Request) -> Response:
    plane = dataplane_of(request)

    async def decode(processor: ModelProcessor) -> DecodedBody[v2.InferRequest]:
        body = _decompress(
            await request.body(),
            request.headers.get("content-encoding"),
            plane.settings.max_body_bytes,
        )
        decoded = v2.decode_request(
            body, request.headers.get(v2.HEADER_LENGTH), processor.limits, plane.shared_memory
        )
        return v2_body(decoded)

    def encode(result: InferenceResult[v2.InferRequest]) -> Response:
        payload, header_length = v2.encode_response(
            model_name=result.model.name,
            model_version=result.model.version,
            request=result.body.wire,
            outputs=result.outputs,
        )
        if header_length is None:
            return Response(payload, media_type="application/json")
        return Response(
            payload,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(header_length)},
        )

    return await plane.infer(inference_request(request, "v2", TensorBody(decode)), encode)


def _model_params(request: Request) -> tuple[str, str | None]:
    params = request.path_params
    return params["model_name"], params.get("version")


def routes() -> list[RouteSpec]:
    tags = ("Open Inference Protocol v2",)
    specs = [
        RouteSpec("/v2", server_metadata, ("GET",), "Server metadata", tags),
        RouteSpec("/v2/models/stats", statistics, ("GET",), "Statistics of every model", tags),
    ]
    for prefix, suffix in (
        ("/v2/models/{model_name}", ""),
        ("/v2/models/{model_name}/versions/{version}", " (version)"),
    ):
        specs += [
            RouteSpec(prefix, model_metadata, ("GET",), f"Model metadata{suffix}", tags),
            RouteSpec(f"{prefix}/ready", model_ready, ("GET",), f"Model readiness{suffix}", tags),
            RouteSpec(
                f"{prefix}/config", model_config, ("GET",), f"Model configuration{suffix}", tags
            ),
            RouteSpec(f"{prefix}/stats", statistics, ("GET",), f"Statistics{suffix}", tags),
            RouteSpec(
                f"{prefix}/infer",
                infer,
                ("POST",),
                f"Inference{suffix}",
                tags,
                openapi_extra=INFER_BODY,
                hot=True,
            ),
        ]
    return specs
