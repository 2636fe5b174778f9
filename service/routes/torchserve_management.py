"""TorchServe's management API, the part migrating teams script against (`torchserve-native`
only, on the management token): list, describe, register from the configured store (never
from a URL), scale workers, unregister. Answers and errors in TorchServe's shapes."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.errors import InvalidInput, NotFound, ServingError
from service.native.archives import ARCHIVE_SUFFIX
from service.repository import ModelVersion
from service.routes.common import credentials, dataplane_of, json_response
from service.routes.native import torchserve_error

TAGS: list[str | Enum] = ["TorchServe management"]


def _describe(model: ModelVersion) -> dict[str, object]:
    route = model.handler
    options = route.options if route is not None else None
    workers = [
        {"id": str(index), "pid": pid, "status": "READY", "gpu": False}
        for index, pid in enumerate(route.pool.pids() if route is not None else [])
    ]
    return {
        "modelName": model.name,
        "modelVersion": model.version,
        "modelUrl": f"{model.name}{ARCHIVE_SUFFIX}",
        "runtime": "python",
        "minWorkers": route.pool.target if route is not None else 0,
        "maxWorkers": route.pool.target if route is not None else 0,
        "batchSize": options.batch_size if options is not None else 0,
        "maxBatchDelay": options.max_batch_delay_ms if options is not None else 0,
        "status": model.state.value,
        "workers": workers,
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


Handler = Callable[..., Awaitable[Response]]


def torchserve_answers(handler: Handler) -> Handler:
    """Authorize on the management token; errors come back in TorchServe's form."""

    @functools.wraps(handler)
    async def answer(request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            dataplane_of(request).authorize_management(credentials(request))
            return await handler(request, *args, **kwargs)
        except ServingError as error:
            return torchserve_error(error)

    return answer


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/models", tags=TAGS, summary="List models (TorchServe)")
    @torchserve_answers
    async def list_models(request: Request) -> Response:
        names = dataplane_of(request).repository.names()
        return json_response(
            {"models": [{"modelName": n, "modelUrl": f"{n}{ARCHIVE_SUFFIX}"} for n in names]}
        )

    @router.get("/models/{model_name}", tags=TAGS, summary="Describe a model (TorchServe)")
    @torchserve_answers
    async def describe(request: Request, model_name: str) -> Response:
        versions = dataplane_of(request).repository.versions(model_name)
        return json_response([_describe(model) for model in versions.values()])

    @router.post("/models", tags=TAGS, summary="Register an archive of the store (TorchServe)")
    @torchserve_answers
    async def register(request: Request) -> Response:
        name = _archive_name(request.query_params.get("url"))
        plane = dataplane_of(request)
        if name in plane.repository.names():
            raise InvalidInput(f"Model {name} is already registered.")
        models = await plane.control.load(name)
        failed = [model for model in models if not model.ready]
        if failed:
            raise InvalidInput("; ".join(f"{m.name} v{m.version}: {m.reason}" for m in failed))
        workers = request.query_params.get("initial_workers")
        if workers is not None:
            await _scale(models, _count(workers))
        (model,) = models[-1:]
        target = model.handler.pool.target if model.handler is not None else 0
        return json_response(
            {
                "status": f'Model "{name}" Version: {model.version} registered with '
                f"{target} initial workers"
            }
        )

    @router.put("/models/{model_name}", tags=TAGS, summary="Scale workers (TorchServe)")
    @torchserve_answers
    async def scale(request: Request, model_name: str) -> Response:
        count = _count(request.query_params.get("min_worker"))
        versions = dataplane_of(request).repository.versions(model_name)
        await _scale(list(versions.values()), count)
        return json_response({"status": f"Workers scaled to {count} for model: {model_name}"})

    @router.delete("/models/{model_name}", tags=TAGS, summary="Unregister (TorchServe)")
    @torchserve_answers
    async def unregister(request: Request, model_name: str) -> Response:
        plane = dataplane_of(request)
        plane.repository.versions(model_name)  # 404 when unknown
        await plane.control.unload(model_name)
        return json_response({"status": f'Model "{model_name}" unregistered'})

    return router


def _count(value: str | None) -> int:
    try:
        count = int(value) if value is not None else -1
    except ValueError:
        count = -1
    if count < 0:
        raise InvalidInput("min_worker must be a whole number >= 0")
    return count


async def _scale(models: list[ModelVersion], count: int) -> None:
    for model in models:
        if model.handler is None:
            raise NotFound(f"model {model.name!r} has no handler workers")
        await model.handler.pool.scale(count)
        model.handler.batcher.resize(max(1, count))
