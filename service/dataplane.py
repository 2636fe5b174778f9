"""The data plane: one request's way through the server, the same for every protocol.

`DataPlane.serve` takes a protocol-neutral `InferenceRequest` and an encoder, and owns every
step between them: authorization, one model lookup, the body decode (off the event loop when
the processor says it is CPU-heavy), one deadline policy, the batcher, leaving the queue when
the client goes away, metric labels and the request log. No HTTP or gRPC type appears here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from service.auth import check_token
from service.batcher import BatchTrace, current_trace
from service.errors import ClientDisconnected, NotFound, ServingError, ShuttingDown
from service.feeds import Feed, rows_of
from service.inference import DecodedBody, InferenceRequest, InferenceResult, WireT
from service.metrics import GatewayMetrics
from service.repository import LoadedModel, ModelRepository
from service.settings import Settings
from service.tracing import Tracing

ResponseT = TypeVar("ResponseT")
request_log = logging.getLogger("service.requests")

CLIENT_GONE = 499
"""Status recorded for a request whose client went away (nginx's convention)."""


class DataPlane:
    def __init__(
        self,
        settings: Settings,
        repository: ModelRepository,
        metrics: GatewayMetrics,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.metrics = metrics
        self.tracing = tracing
        self.draining = False
        self.started = False
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def ready(self) -> bool:
        return self.started and not self.draining

    @property
    def active_requests(self) -> int:
        return self._active

    # -- policies ----------------------------------------------------------------------------

    def authorize_inference(self, token: str | None) -> None:
        check_token(token, self.settings.inference_token, self.settings.management_token)

    def authorize_management(self, token: str | None) -> None:
        if self.settings.management_token is None:
            raise NotFound(
                "the repository API is disabled (set GATEWAY_MANAGEMENT_TOKEN to enable it)"
            )
        check_token(token, self.settings.management_token, self.settings.inference_token)

    def deadline(self, *timeouts_ms: float | None) -> float | None:
        """Absolute deadline (monotonic clock): the shortest of the protocol's timeouts and the
        server default."""
        limits = [t for t in (*timeouts_ms, self.settings.default_timeout_ms) if t is not None]
        if not limits:
            return None
        return time.monotonic() + min(limits) / 1000.0

    # -- one request -------------------------------------------------------------------------

    async def serve(
        self,
        request: InferenceRequest[WireT],
        encode: Callable[[InferenceResult[WireT]], ResponseT],
    ) -> ResponseT:
        """Run `request` and return `encode(result)`. Raises `ServingError` (after counting it)
        for the adapter to turn into its protocol's error."""
        started = time.perf_counter()
        code = 500
        labels: tuple[str, str] | None = None
        rows: int | None = None
        failure: str | None = None
        span = (
            self.tracing.start_request(request.protocol, request.model, request.trace_context)
            if self.tracing is not None
            else None
        )
        if span is not None and not span.span.is_recording():
            span = None  # not sampled: no children, no batch span, no exemplar
        trace = BatchTrace() if self.settings.log_requests or span is not None else None
        if trace is not None:
            trace.span = span.span if span is not None else None
            current_trace.set(trace)
        self._active += 1
        self._idle.clear()
        try:
            self.authorize_inference(request.credentials)
            if self.draining:
                raise ShuttingDown("server is shutting down")
            entry = self.repository.get(request.model, request.version)
            labels = (entry.name, entry.version)
            model = entry.serving()
            if span is None:
                feed, body = await self._decode(request, model)
            else:
                with span.child("decode"):
                    feed, body = await self._decode(request, model)
            if span is not None:
                rows = rows_of(feed)
            deadline = self.deadline(request.timeout_ms, body.timeout_ms)
            outputs = await self._infer(model, feed, deadline, request.disconnected)
            result = InferenceResult(model, outputs, body)
            if span is None:
                response = encode(result)
            else:
                with span.child("encode"):
                    response = encode(result)
            code = 200
            return response
        except ServingError as error:
            code, failure = error.status_code, error.message
            raise
        except asyncio.CancelledError:
            code = CLIENT_GONE
            raise
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()
            seconds = time.perf_counter() - started
            trace_id = span.trace_id if span is not None else None
            # Only known models and versions become labels, so clients cannot grow the set.
            if labels is not None:
                self.metrics.observe_request(
                    *labels, request.protocol, code, seconds, trace_id=trace_id
                )
            if span is not None and trace is not None:
                span.finish(code=code, labels=labels, rows=rows, trace=trace, error=failure)
            if self.settings.log_requests and trace is not None:
                self._log(request, labels, code, seconds, trace, trace_id)

    async def _decode(
        self, request: InferenceRequest[WireT], model: LoadedModel
    ) -> tuple[Feed, DecodedBody[WireT]]:
        """The wire body, then the feed (off the event loop when the processor says so)."""
        body = await request.decode(model.processor)
        processor = model.processor
        if processor.decodes_heavily(body.inputs):
            return await asyncio.to_thread(processor.feed, body.inputs), body
        return processor.feed(body.inputs), body

    async def _infer(
        self,
        model: LoadedModel,
        feed: Feed,
        deadline: float | None,
        disconnected: Callable[[], Awaitable[None]] | None,
    ) -> Feed:
        """Queue `feed` on the model's batcher; leave the queue if the client goes away.

        A request that will be dispatched at once has nothing to leave, so it skips the watcher.
        """
        model.inflight.inc()
        try:
            if disconnected is None or model.batcher.dispatches_immediately:
                return await model.batcher.submit(feed, deadline=deadline)
            handler = asyncio.current_task()
            assert handler is not None
            gone = False

            async def watch() -> None:
                nonlocal gone
                await disconnected()
                gone = True
                handler.cancel()

            watcher = asyncio.get_running_loop().create_task(watch())
            try:
                return await model.batcher.submit(feed, deadline=deadline)
            except asyncio.CancelledError:
                if not gone:
                    raise
                handler.uncancel()
                raise ClientDisconnected("client disconnected") from None
            finally:
                watcher.cancel()
        finally:
            model.inflight.dec()

    def _log(
        self,
        request: InferenceRequest[WireT],
        labels: tuple[str, str] | None,
        code: int,
        seconds: float,
        trace: BatchTrace,
        trace_id: str | None,
    ) -> None:
        request_log.info(
            "request",
            extra={
                "trace_id": trace_id,
                "model": request.model,
                "version": labels[1] if labels else None,
                "protocol": request.protocol,
                "status": code,
                "ms": round(seconds * 1000, 3),
                "queue_ms": round(trace.queue_s * 1000, 3),
                "compute_ms": round(trace.compute_s * 1000, 3),
                "batch_rows": trace.batch_rows,
            },
        )

    # -- drain ---------------------------------------------------------------------------------

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no inference request is being handled; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
