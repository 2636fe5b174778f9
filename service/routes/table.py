"""Routes declared once: FastAPI registers them (docs, fallback) and the fast path serves the
hot ones. Endpoints take only the request and read `request.path_params`."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

Endpoint = Callable[[Request], Awaitable[Response]]
_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)}")


@dataclass(frozen=True)
class RouteSpec:
    path: str
    endpoint: Endpoint
    methods: tuple[str, ...]
    summary: str
    tags: tuple[str, ...]
    openapi_extra: dict[str, Any] | None = field(default=None, hash=False)
    hot: bool = False
    """Inference routes: served by `service.fastpath` ahead of FastAPI's router."""
    responses: dict[int | str, dict[str, Any]] | None = field(default=None, hash=False)


def _documented(spec: RouteSpec) -> Callable[..., Awaitable[Response]]:
    """A FastAPI endpoint whose signature names the path parameters (for OpenAPI)."""

    async def endpoint(request: Request, **_path: str) -> Response:
        return await spec.endpoint(request)

    parameters = [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)
    ]
    parameters += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str)
        for name in _PARAM.findall(spec.path)
    ]
    endpoint.__signature__ = inspect.Signature(parameters, return_annotation=Response)  # type: ignore[attr-defined]
    endpoint.__name__ = spec.endpoint.__name__ + "_" + str(abs(hash(spec.path)))
    return endpoint


def router_for(specs: Sequence[RouteSpec]) -> APIRouter:
    router = APIRouter()
    for spec in specs:
        router.add_api_route(
            spec.path,
            _documented(spec),
            methods=list(spec.methods),
            summary=spec.summary,
            tags=list(spec.tags),
            openapi_extra=spec.openapi_extra,
        )
    return router
