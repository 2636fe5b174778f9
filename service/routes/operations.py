"""Health, metrics and the model repository (management) API."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.metrics import CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE
from service.repository import IndexEntry, ModelVersion
from service.routes.common import authorize_inference, credentials, dataplane_of, json_response


def _protected_probe(request: Request) -> None:
    if dataplane_of(request).settings.protect_health_and_metrics:
        authorize_inference(request)


def _authorize_management(request: Request) -> None:
    dataplane_of(request).authorize_management(credentials(request))


def _index_entry(model: ModelVersion) -> dict[str, str]:
    return dataclasses.asdict(IndexEntry.of(model))


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/v2/health/live", tags=["Health"], summary="Liveness")
    async def live(request: Request) -> Response:
        _protected_probe(request)
        return json_response({"live": True})

    @router.get("/v2/health/ready", tags=["Health"], summary="Readiness")
    async def ready(request: Request) -> Response:
        _protected_probe(request)
        plane = dataplane_of(request)
        if plane.ready:
            return json_response({"ready": True})
        reason = "shutting down" if plane.draining else "loading models"
        return json_response(
            {"ready": False, "error": f"not ready: {reason}"}, 503, {"Retry-After": "1"}
        )

    @router.get("/ping", tags=["TorchServe-compatible"], summary="Health (TorchServe style)")
    async def ping(request: Request) -> Response:
        _protected_probe(request)
        if dataplane_of(request).ready:
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
        _protected_probe(request)
        body, content_type = dataplane_of(request).metrics.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    @router.post("/v2/repository/index", tags=["Model repository"], summary="List models")
    async def index(request: Request) -> Response:
        _authorize_management(request)
        entries = dataplane_of(request).repository.index()
        return json_response([dataclasses.asdict(entry) for entry in entries])

    @router.post(
        "/v2/repository/models/{model_name}/load",
        tags=["Model repository"],
        summary="Load or reload a model's versions",
    )
    async def load(request: Request, model_name: str) -> Response:
        _authorize_management(request)
        models = await dataplane_of(request).control.load(model_name)
        failed = [model for model in models if not model.ready]
        body = {"name": model_name, "versions": [_index_entry(model) for model in models]}
        if failed:
            body["error"] = "; ".join(f"v{m.version}: {m.reason}" for m in failed)
        return json_response(body, 200 if not failed else 400)

    @router.post(
        "/v2/repository/models/{model_name}/unload",
        tags=["Model repository"],
        summary="Unload a model (drains its queue first)",
    )
    async def unload(request: Request, model_name: str) -> Response:
        _authorize_management(request)
        await dataplane_of(request).control.unload(model_name)
        return json_response({"name": model_name, "unloaded": True})

    return router
