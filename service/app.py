"""Builds the FastAPI application from settings: routes, error handling, lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from service import __version__
from service.dataplane import DataPlane
from service.errors import ServingError
from service.fastpath import FastPath
from service.limits import BodyLimitMiddleware
from service.metrics import GatewayMetrics
from service.models.store import repository_for
from service.routes import operations, predictions, shared_memory, v2
from service.routes.errors import boundary_for
from service.routes.table import router_for
from service.settings import Settings
from service.tracing import Tracing

log = logging.getLogger(__name__)


async def drain(plane: DataPlane, timeout_s: float) -> bool:
    """Refuse new work, then wait for in-flight requests; True when all were answered."""
    return await plane.drain(timeout_s)


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, minus the 422 responses it documents but this API never sends, plus
    the `{"error": ...}` body every non-2xx answer has."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    error = {"description": "Error", "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    for methods in schema.get("paths", {}).values():
        for operation in methods.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses.setdefault("default", error)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    app.openapi_schema = schema
    return schema


DOCS_ASSETS = "/docs-assets"
"""Where the gateway serves Swagger UI's and ReDoc's files (from the fastapi-offline package)."""


def _docs_assets_dir() -> str:
    from importlib.resources import files

    return str(files("fastapi_offline") / "static")


DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'self'"
)
"""The doc pages may load from this server only. Swagger UI and ReDoc need their inline
bootstrap scripts and styles, ReDoc a worker from a blob; ReDoc's sidebar also links a logo
from its CDN, which this policy keeps the browser from fetching (the link text stays)."""


def add_offline_docs(app: FastAPI) -> None:
    """`/docs` (Swagger UI) and `/redoc` from assets shipped in a Python package, so the pages
    render without any request leaving the machine: no CDN script or stylesheet, no Google
    fonts, no favicon from fastapi.tiangolo.com, no swagger.io validator badge, and a
    Content-Security-Policy that allows this server only."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=_docs_assets_dir()), name="docs-assets")
    redirect = "/docs/oauth2-redirect"

    def local_only(page: HTMLResponse) -> HTMLResponse:
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect}",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )
        return local_only(page)

    @app.get(redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return local_only(get_swagger_ui_oauth2_redirect_html())

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        return local_only(page)


class GatewayApp(FastAPI):
    """FastAPI for the docs, operations routes and fallbacks, behind a lean front for HTTP.

    Profiled under load on the tiny tabular model, the ASGI layers FastAPI puts around every
    request (its telemetry hook, Starlette's error and exception middleware, each wrapping
    `send`) cost about a tenth of the server's CPU; `front` reaches the inference routes
    without them and falls back to the whole FastAPI stack for everything else.
    """

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.front is not None:
            scope["app"] = self
            await self.front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, *, tracing: Tracing | None = None) -> GatewayApp:
    """The gateway for `settings`. `tracing` replaces the one `settings.tracing` would build
    (tests pass one with an in-memory exporter)."""
    settings = settings or Settings()
    metrics = GatewayMetrics()
    if settings.device == "cuda" or any("CUDA" in p or "Tensorrt" in p for p in settings.providers):
        metrics.add_gpu_collector()
    if tracing is None and settings.tracing:
        tracing = Tracing(settings)
    repository = repository_for(settings, metrics, tracing)
    plane = DataPlane(settings, repository, metrics, tracing)
    errors = boundary_for(settings.serves_archives)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Listen at once (liveness answers) and load models behind readiness.
        loading = asyncio.create_task(plane.start(), name="load-models")
        app.state.loading = loading
        try:
            yield
        finally:
            drained = await drain(plane, settings.drain_seconds)
            if not drained:
                log.warning("drain timed out with %d requests in flight", plane.active_requests)
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            await plane.close()
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)

    app = GatewayApp(
        title="Model-serving gateway",
        version=__version__,
        description="Open Inference Protocol v2, TorchServe-compatible and KServe V1 routes "
        "over dynamically batched ONNX Runtime / TorchScript / TorchServe backends.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    add_offline_docs(app)
    app.state.dataplane = plane
    specs = [*v2.routes(), *shared_memory.routes(), *predictions.routes()]
    app.include_router(router_for(specs))
    app.include_router(operations.build_router())
    if settings.serves_archives:
        from service.routes import torchserve_management

        app.include_router(torchserve_management.build_router())

    # The one HTTP error boundary (with the fast path): every error, in its route's form.
    @app.exception_handler(ServingError)
    async def serving_error(request: Request, error: ServingError) -> Response:
        return errors.answer(request.url.path, error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {"msg": "invalid request"}
        return errors.response(request.url.path, 400, f"invalid request: {first.get('msg')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return errors.response(
            request.url.path, error.status_code, str(error.detail), error.headers
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        return errors.unexpected(request.url.path)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    # Every HTTP request passes the body limit; the fast path serves inference and hands the
    # rest to FastAPI's own stack (telemetry, error middleware, router).
    front: ASGIApp = FastPath(
        partial(FastAPI.__call__, app), routes=[spec for spec in specs if spec.hot], errors=errors
    )
    front = BodyLimitMiddleware(
        front, max_body_bytes=settings.max_body_bytes, note=plane.allocator.note
    )
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        front = CORSMiddleware(
            front,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    app.front = front
    return app
