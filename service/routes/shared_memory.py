"""Triton's shared memory extension over REST: `/v2/systemsharedmemory` (status, register,
unregister) and `/v2/cudasharedmemory`, which answers that CUDA shared memory is not supported
here, except that unregistering every CUDA region succeeds (clients call it before they
start). Each endpoint decodes, calls one data plane verb and encodes. Register and unregister
answer `{}` (Triton sends an empty body; a JSON one keeps every answer's type documented, and
tritonclient reads neither)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from service.errors import InvalidInput
from service.routes.common import credentials, dataplane_of, json_response
from service.routes.table import RouteSpec

SYSTEM = "/v2/systemsharedmemory"
CUDA = "/v2/cudasharedmemory"

REGISTER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["key", "byte_size"],
                    "properties": {
                        "key": {"type": "string", "example": "/input_data"},
                        "offset": {"type": "integer", "minimum": 0},
                        "byte_size": {"type": "integer", "minimum": 1},
                    },
                }
            }
        },
    }
}


def _region(request: Request) -> str | None:
    name: str | None = request.path_params.get("region_name")
    return name


async def status(request: Request) -> Response:
    regions = dataplane_of(request).shared_memory_status(_region(request), credentials(request))
    return json_response([region.as_dict() for region in regions])


async def register(request: Request) -> Response:
    plane = dataplane_of(request)
    token = credentials(request)
    plane.authorize_inference(token)  # before the body is read
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"request body is not valid JSON: {error}") from None
    if not isinstance(body, dict) or not isinstance(body.get("key"), str):
        raise InvalidInput("the register request needs a JSON object with a string 'key'")
    if "byte_size" not in body:
        raise InvalidInput("the register request needs 'byte_size'")
    name = request.path_params["region_name"]
    plane.shared_memory_register(name, body["key"], body.get("offset", 0), body["byte_size"], token)
    return json_response({})


async def unregister(request: Request) -> Response:
    dataplane_of(request).shared_memory_unregister(_region(request), credentials(request))
    return json_response({})


async def cuda(request: Request) -> Response:
    dataplane_of(request).cuda_shared_memory(credentials(request))


async def cuda_unregister(request: Request) -> Response:
    dataplane_of(request).cuda_shared_memory_unregister(_region(request), credentials(request))
    return json_response({})


def routes() -> list[RouteSpec]:
    tags = ("Shared memory",)
    region = "/region/{region_name}"
    return [
        RouteSpec(f"{SYSTEM}/status", status, ("GET",), "System shared memory regions", tags),
        RouteSpec(f"{SYSTEM}{region}/status", status, ("GET",), "One region's status", tags),
        RouteSpec(
            f"{SYSTEM}{region}/register",
            register,
            ("POST",),
            "Register a system shared memory region",
            tags,
            openapi_extra=REGISTER_BODY,
        ),
        RouteSpec(
            f"{SYSTEM}{region}/unregister", unregister, ("POST",), "Unregister a region", tags
        ),
        RouteSpec(f"{SYSTEM}/unregister", unregister, ("POST",), "Unregister every region", tags),
        RouteSpec(f"{CUDA}/status", cuda, ("GET",), "CUDA shared memory (not supported)", tags),
        RouteSpec(f"{CUDA}{region}/status", cuda, ("GET",), "Not supported", tags),
        RouteSpec(f"{CUDA}{region}/register", cuda, ("POST",), "Not supported", tags),
        RouteSpec(f"{CUDA}{region}/unregister", cuda_unregister, ("POST",), "Not supported", tags),
        RouteSpec(
            f"{CUDA}/unregister",
            cuda_unregister,
            ("POST",),
            "Unregister every CUDA region (none exist: succeeds)",
            tags,
        ),
    ]
