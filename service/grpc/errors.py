"""One mapping from the gateway's errors to gRPC status codes, applied to every method."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar

import grpc

from service.errors import ServingError, Unavailable

log = logging.getLogger(__name__)

SelfT = TypeVar("SelfT")
RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
P = ParamSpec("P")


PUSHBACK_KEY = "grpc-retry-pushback-ms"
"""Trailing metadata of an UNAVAILABLE answer: when to retry (HTTP's `Retry-After`); gRPC's own
retry policy honours it."""


def status_of(error: ServingError) -> grpc.StatusCode:
    return grpc.StatusCode[error.grpc_status]


def trailing_metadata_of(error: ServingError) -> tuple[tuple[str, str], ...]:
    if isinstance(error, Unavailable):
        return ((PUSHBACK_KEY, str(error.retry_after_s * 1000)),)
    return ()


def translate_errors(
    method: Callable[
        Concatenate[SelfT, RequestT, grpc.aio.ServicerContext, P], Awaitable[ResponseT]
    ],
) -> Callable[Concatenate[SelfT, RequestT, grpc.aio.ServicerContext, P], Awaitable[ResponseT]]:
    """Abort with the error's status and message; anything unexpected is INTERNAL.

    The abort happens after the `except` block, not in it: an abort raised while handling the
    error would chain it (`__context__`), and gRPC keeps the latest call's abort exception
    (in its RPC state) until the next call arrives; through the error's traceback that kept
    the refused request and everything its frames held (+170 MB per refused 60 MB message,
    never freed while no other call came).
    """

    @functools.wraps(method)
    async def wrapper(
        self: SelfT,
        request: RequestT,
        context: grpc.aio.ServicerContext,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> ResponseT:
        try:
            return await method(self, request, context, *args, **kwargs)
        except ServingError as error:
            status, details = status_of(error), error.message
            trailing = trailing_metadata_of(error)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception:
            log.exception("unhandled error in %s", method.__name__)
            status, details, trailing = grpc.StatusCode.INTERNAL, "internal server error", ()
        await context.abort(status, details, trailing_metadata=trailing)
        raise AssertionError("context.abort returned")  # pragma: no cover

    return wrapper  # type: ignore[return-value]
