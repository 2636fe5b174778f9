"""Health, metrics and the model repository (management) API."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.dataplane import IndexEntry
from service.metrics import CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE
from service.routes.common import credentials, dataplane_of, json_response


def _entry(entry: IndexEntry) -> dict[str, str]:
    return dataclasses.asdict(entry)


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/v2/health/live", tags=["Health"], summary="Liveness")
    async def live(request: Request) -> Response:
        return json_response({"live": dataplane_of(request).live(credentials(request))})

    @router.get("/v2/health/ready", tags=["Health"], summary="Readiness")
    async def ready(request: Request) -> Response:
        readiness = dataplane_of(request).readiness(credentials(request))
        if readiness.ready:
            return json_response({"ready": True})
        return json_response(
            {"ready": False, "error": f"not ready: {readiness.reason}"}, 503, {"Retry-After": "1"}
        )

    @router.get("/ping", tags=["TorchServe-compatible"], summary="Health (TorchServe style)")
    async def ping(request: Request) -> Response:
        if dataplane_of(request).readiness(credentials(request)).ready:
            return json_response({"status": "Healthy"})
        return json_response({"status": "Unhealthy", "error": "not ready"}, 503)

    @router.get(
        "/metrics",
        tags=["Metrics"],
        summary="Prometheus metrics",
        responses={
            200: {
                "content": {
                    CONTENT_TYPE: {"schema": {"type": "string"}},
                    OPENMETRICS_CONTENT_TYPE: {"schema": {"type": "string"}},
                },
                "description": "Prometheus text exposition format",
            }
        },
        response_class=Response,
    )
    async def metrics(request: Request) -> Response:
        plane = dataplane_of(request)
        body, content_type = plane.metrics_text(credentials(request), request.headers.get("accept"))
        return Response(body, media_type=content_type)

    @router.post("/v2/repository/index", tags=["Model repository"], summary="List models")
    async def index(request: Request) -> Response:
        entries = dataplane_of(request).repository_index(credentials(request))
        return json_response([_entry(entry) for entry in entries])

    @router.post(
        "/v2/repository/models/{model_name}/load",
        tags=["Model repository"],
        summary="Load or reload a model's versions",
    )
    async def load(request: Request, model_name: str) -> Response:
        outcome = await dataplane_of(request).load(model_name, credentials(request))
        body: dict[str, Any] = {
            "name": model_name,
            "versions": [_entry(entry) for entry in outcome.versions],
        }
        if outcome.failure:
            body["error"] = outcome.failure
        return json_response(body, 400 if outcome.failure else 200)

    @router.post(
        "/v2/repository/models/{model_name}/unload",
        tags=["Model repository"],
        summary="Unload a model (drains its queue first)",
    )
    async def unload(request: Request, model_name: str) -> Response:
        await dataplane_of(request).unload(model_name, credentials(request))
        return json_response({"name": model_name, "unloaded": True})

    return router
