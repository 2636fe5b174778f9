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
_NOT_WORD = re.compile(r"[^a-zA-Z0-9]+")


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


def operation_id(method: str, path: str) -> str:
    """The OpenAPI operationId: the method and the path's words, the same in every process
    (clients generated from the schema name their functions after it).

    >>> operation_id("POST", "/v2/models/{model_name}/infer")
    'post_v2_models_model_name_infer'
    """
    return f"{method.lower()}_{_NOT_WORD.sub('_', path).strip('_')}"


def _documented(spec: RouteSpec, name: str) -> Callable[..., Awaitable[Response]]:
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
    endpoint.__name__ = name
    return endpoint


def router_for(specs: Sequence[RouteSpec]) -> APIRouter:
    """One FastAPI route per spec and method, named by its `operation_id`.

    Raises ValueError when two routes would share an operationId."""
    router = APIRouter()
    taken: dict[str, str] = {}
    for spec in specs:
        for method in spec.methods:
            name = operation_id(method, spec.path)
            if name in taken:
                raise ValueError(
                    f"{method} {spec.path} and {taken[name]} share the operationId {name!r}"
                )
            taken[name] = f"{method} {spec.path}"
            router.add_api_route(
                spec.path,
                _documented(spec, name),
                methods=[method],
                name=name,
                operation_id=name,
                summary=spec.summary,
                tags=list(spec.tags),
                openapi_extra=spec.openapi_extra,
                responses=spec.responses,
            )
    return router
