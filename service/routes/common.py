"""Transport helpers shared by every protocol: errors as JSON, auth, metrics, disconnects."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np
import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import SecretStr

from service.batcher import BatchTrace, current_trace
from service.dataplane import DataPlane
from service.errors import ClientDisconnected, Forbidden, ServingError, Unauthorized
from service.feeds import Feed
from service.repository import ModelVersion

JSON = "application/json"
request_log = logging.getLogger("service.requests")


def json_response(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status_code, media_type=JSON, headers=headers)


def error_response(error: ServingError) -> Response:
    return json_response({"error": error.message}, error.status_code, error.headers)


def dataplane_of(request: Request) -> DataPlane:
    plane: DataPlane = request.app.state.dataplane
    return plane


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _matches(token: str, secret: SecretStr | None) -> bool:
    return secret is not None and hmac.compare_digest(
        token.encode(), secret.get_secret_value().encode()
    )


def authorize(request: Request, required: SecretStr | None, other: SecretStr | None) -> None:
    """401 without a valid token, 403 with the token of the other kind. Open when unset."""
    if required is None:
        return
    token = _bearer(request)
    if token is None:
        raise Unauthorized("missing bearer token")
    if _matches(token, required):
        return
    if _matches(token, other):
        raise Forbidden("this token is not valid for this route")
    raise Unauthorized("invalid bearer token")


def authorize_inference(request: Request) -> None:
    settings = dataplane_of(request).settings
    authorize(request, settings.inference_token, settings.management_token)


async def infer_unless_disconnected(
    request: Request, model: ModelVersion, feed: Feed, deadline: float | None
) -> Mapping[str, np.ndarray]:
    """Run inference; if the client goes away while it waits, leave the queue (499).

    A request that will be dispatched at once has nothing to leave, so it skips the watcher.
    """
    plane = dataplane_of(request)
    assert model.batcher is not None
    if model.batcher.dispatches_immediately:
        return await plane.infer(model, feed, deadline=deadline)
    handler = asyncio.current_task()
    assert handler is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        handler.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await plane.infer(model, feed, deadline=deadline)
    except asyncio.CancelledError:
        if not gone:
            raise
        handler.uncancel()
        raise ClientDisconnected("client disconnected") from None
    finally:
        watcher.cancel()


async def serve(
    request: Request,
    protocol: str,
    model_name: str,
    version: str | None,
    handle: Callable[[DataPlane], Awaitable[Response]],
) -> Response:
    """Run one inference route: auth, in-flight accounting, errors as JSON, metrics."""
    plane = dataplane_of(request)
    started = time.perf_counter()
    code = 500
    trace = BatchTrace() if plane.settings.log_requests else None
    if trace is not None:
        current_trace.set(trace)
    plane.begin()
    try:
        authorize_inference(request)
        response = await handle(plane)
        code = response.status_code
        return response
    except ServingError as error:
        code = error.status_code
        return error_response(error)
    finally:
        plane.end()
        seconds = time.perf_counter() - started
        label_version = _label_version(plane, model_name, version)
        if label_version is not None:
            plane.metrics.observe_request(model_name, label_version, protocol, code, seconds)
        if trace is not None:
            request_log.info(
                "request",
                extra={
                    "model": model_name,
                    "version": label_version,
                    "protocol": protocol,
                    "status": code,
                    "ms": round(seconds * 1000, 3),
                    "queue_ms": round(trace.queue_s * 1000, 3),
                    "compute_ms": round(trace.compute_s * 1000, 3),
                    "batch_rows": trace.batch_rows,
                },
            )


def _label_version(plane: DataPlane, model_name: str, version: str | None) -> str | None:
    """Only known models and versions become labels, so clients cannot grow the label set."""
    try:
        return plane.repository.get(model_name, version).version
    except ServingError:
        return None
