"""Serves the inference routes ahead of FastAPI's middleware, routing and dependency injection.

Measured in-process on the tiny tabular model, FastAPI's stack around an endpoint cost more
CPU than the endpoint itself; at the request rates a small model reaches that is most of the
server. The same `RouteSpec`s are registered with FastAPI too, so OpenAPI documents them and
anything this path does not match (other methods, odd paths) falls through to FastAPI.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.convertors import Convertor
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServingError
from service.routes.errors import ErrorBoundary
from service.routes.table import Endpoint, RouteSpec


class FastPath:
    def __init__(self, app: ASGIApp, routes: Sequence[RouteSpec], errors: ErrorBoundary) -> None:
        self.app = app
        self.errors = errors
        self.routes: list[
            tuple[frozenset[str], object, dict[str, Convertor[object]], Endpoint]
        ] = []
        for spec in routes:
            regex, _format, convertors = compile_path(spec.path)
            self.routes.append((frozenset(spec.methods), regex, convertors, spec.endpoint))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            for methods, regex, convertors, endpoint in self.routes:
                match = regex.match(path)  # type: ignore[attr-defined]
                if match is None or method not in methods:
                    continue
                scope["path_params"] = {
                    name: convertors[name].convert(value)
                    for name, value in match.groupdict().items()
                }
                await self._serve(endpoint, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except ServingError as error:
            response = self.errors.answer(scope["path"], error)
        except Exception:
            response = self.errors.unexpected(scope["path"])
        await response(scope, receive, send)
