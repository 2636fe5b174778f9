"""TorchServe's management API, the part migrating teams script against (`torchserve-native`
only, on the management token): list, describe, register from the configured store (never
from a URL), scale workers, unregister. Answers in TorchServe's shapes; errors take its form
at the HTTP error boundary (`service.routes.errors`)."""

from __future__ import annotations

from enum import Enum

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.dataplane import ModelWorkers
from service.errors import InvalidInput
from service.native.archives import ARCHIVE_SUFFIX
from service.routes.common import credentials, dataplane_of, json_response

TAGS: list[str | Enum] = ["TorchServe management"]


def _describe(model: ModelWorkers) -> dict[str, object]:
    entry, workers = model.entry, model.workers
    return {
        "modelName": entry.name,
        "modelVersion": entry.version,
        "modelUrl": f"{entry.name}{ARCHIVE_SUFFIX}",
        "runtime": "python",
        "minWorkers": workers.target,
        "maxWorkers": workers.target,
        "batchSize": workers.batch_size,
        "maxBatchDelay": workers.max_batch_delay_ms,
        "status": entry.state,
        "workers": [
            {"id": str(index), "pid": pid, "status": "READY", "gpu": False}
            for index, pid in enumerate(workers.pids)
        ],
    }


def _archive_name(url: str | None) -> str:
    """`x.mar` (a file of the configured model store) -> model name; URLs and paths refused."""
    if not url:
        raise InvalidInput("Parameter url is required.")
    if "/" in url or "\\" in url or ":" in url or not url.endswith(ARCHIVE_SUFFIX):
        raise InvalidInput(
            f"only archives of the configured model store can be registered (x{ARCHIVE_SUFFIX}),"
            f" not {url!r}"
        )
    return url[: -len(ARCHIVE_SUFFIX)]


def _count(value: str | None) -> int:
    try:
        count = int(value) if value is not None else -1
    except ValueError:
        count = -1
    if count < 0:
        raise InvalidInput("min_worker must be a whole number >= 0")
    return count


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/models", tags=TAGS, summary="List models (TorchServe)")
    async def list_models(request: Request) -> Response:
        names = dataplane_of(request).model_names(credentials(request))
        return json_response(
            {"models": [{"modelName": n, "modelUrl": f"{n}{ARCHIVE_SUFFIX}"} for n in names]}
        )

    @router.get("/models/{model_name}", tags=TAGS, summary="Describe a model (TorchServe)")
    async def describe(request: Request, model_name: str) -> Response:
        models = dataplane_of(request).model_workers(model_name, credentials(request))
        return json_response([_describe(model) for model in models])

    @router.post("/models", tags=TAGS, summary="Register an archive of the store (TorchServe)")
    async def register(request: Request) -> Response:
        plane, token = dataplane_of(request), credentials(request)
        plane.authorize_management(token)  # before the query is read
        name = _archive_name(request.query_params.get("url"))
        initial = request.query_params.get("initial_workers")
        workers = _count(initial) if initial is not None else None
        model = await plane.register(name, workers, token)
        return json_response(
            {
                "status": f'Model "{name}" Version: {model.entry.version} registered with '
                f"{model.workers.target} initial workers"
            }
        )

    @router.put("/models/{model_name}", tags=TAGS, summary="Scale workers (TorchServe)")
    async def scale(request: Request, model_name: str) -> Response:
        plane, token = dataplane_of(request), credentials(request)
        plane.authorize_management(token)  # before the query is read
        count = _count(request.query_params.get("min_worker"))
        await plane.scale(model_name, count, token)
        return json_response({"status": f"Workers scaled to {count} for model: {model_name}"})

    @router.delete("/models/{model_name}", tags=TAGS, summary="Unregister (TorchServe)")
    async def unregister(request: Request, model_name: str) -> Response:
        await dataplane_of(request).unload(model_name, credentials(request))
        return json_response({"status": f'Model "{model_name}" unregistered'})

    return router
