"""Admission of gRPC calls: at most `limit` calls run at once; the next is answered UNAVAILABLE
with a retry hint, counted and logged, before it costs more than its headers.

Why: without a bound of our own, a burst of calls waits inside gRPC's core until the event loop
picks each one up, and past ~1,000 waiting calls the core cancels new ones at random (its
`grpc.server.max_pending_requests` early drop): the client sees CANCELLED and the gateway sees
nothing (measured: 145 of a burst of 2,000 ModelInfer calls, no metric, no log line). Refusing
here is cheap (the request message is not even parsed), so the loop drains the core's backlog
quickly and every call gets an answer the client can act on. `grpc-retry-pushback-ms` is the
trailing metadata gRPC's own retry policy honours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from service.grpc.errors import PUSHBACK_KEY

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 10.0
"""Refusals are logged at most this often (with the count since the previous line): a burst
must not also flood the log."""


class Admission(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts the calls running in this process and refuses those past `limit`.

    A call counts from the moment its handler starts until it returns (a streaming call until
    its stream ends); calls to an `exempt` service (health checks) are neither counted nor
    refused. `refused(method)` is called once per refusal (the metric), `ended()` once per
    counted or refused call when it is over (`service.memory.AllocatorTrim.note`: a flood of
    calls that send nothing still allocates)."""

    def __init__(
        self,
        limit: int,
        *,
        pushback_ms: int,
        refused: Callable[[str], None],
        ended: Callable[[], None] = lambda: None,
        exempt: frozenset[str] = frozenset(),
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        self.pushback_ms = pushback_ms
        self.active = 0
        self._refused = refused
        self._ended = ended
        self._exempt = exempt
        self._unlogged = 0
        self._logged_at = -LOG_INTERVAL_S

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.lstrip("/").split("/")[0] in self._exempt:
            return handler
        return _admitted(handler, self, method)

    def enter(self, method: str) -> bool:
        """Take a place for a call, or refuse it (False: counted and logged)."""
        if self.active >= self.limit:
            self._refuse(method)
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1
        self._ended()

    def refusal(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The details and trailing metadata a refused call is answered with."""
        return (
            f"server busy: {self.active} gRPC calls in progress, the limit is {self.limit} "
            f"(GATEWAY_GRPC_MAX_CONCURRENT_CALLS); retry after {self.pushback_ms} ms",
            ((PUSHBACK_KEY, str(self.pushback_ms)),),
        )

    def _refuse(self, method: str) -> None:
        self._refused(method)
        self._ended()
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL_S:
            log.warning(
                "refused %d gRPC call(s) with UNAVAILABLE: %d in progress, the limit is %d "
                "(latest: %s)",
                self._unlogged,
                self.active,
                self.limit,
                method,
            )
            self._unlogged = 0
            self._logged_at = now


def _admitted(handler: Any, admission: Admission, method: str) -> Any:
    """`handler` with its behavior wrapped in the admission check. A unary request is parsed
    only once admitted (the handler's deserializer moves into the wrapper)."""

    async def refuse(context: grpc.aio.ServicerContext) -> None:
        details, trailing = admission.refusal()
        await context.abort(grpc.StatusCode.UNAVAILABLE, details, trailing_metadata=trailing)

    if handler.unary_unary is not None or handler.unary_stream is not None:
        parse = handler.request_deserializer or (lambda raw: raw)
    if handler.unary_unary is not None:
        unary_unary = handler.unary_unary

        async def unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            if not admission.enter(method):
                await refuse(context)
            try:
                return await unary_unary(parse(raw), context)
            except grpc.aio.AbortError as abort:
                # gRPC keeps the latest call's abort exception until the next call arrives;
                # its traceback's frames would keep this request (a 60 MB refused message
                # stayed resident). Leave neither the bytes nor the inner frames in it.
                del raw
                raise abort.with_traceback(None) from None
            finally:
                admission.leave()

        return handler._replace(unary_unary=unary, request_deserializer=None)
    if handler.unary_stream is not None:
        unary_stream = handler.unary_stream

        async def unary_to_stream(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            if not admission.enter(method):
                await refuse(context)
            try:
                async for item in unary_stream(parse(raw), context):
                    yield item
            finally:
                admission.leave()

        return handler._replace(unary_stream=unary_to_stream, request_deserializer=None)
    if handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        async def stream_to_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            if not admission.enter(method):
                await refuse(context)
            try:
                return await stream_unary(requests, context)
            finally:
                admission.leave()

        return handler._replace(stream_unary=stream_to_unary)
    stream_stream = handler.stream_stream

    async def streams(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if not admission.enter(method):
            await refuse(context)
        try:
            async for item in stream_stream(requests, context):
                yield item
        finally:
            admission.leave()

    return handler._replace(stream_stream=streams)
