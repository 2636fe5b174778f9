"""The data plane: one request's way through the server, the same for every protocol.

`DataPlane.serve` takes a protocol-neutral `InferenceRequest` and an encoder, and owns every
step between them: authorization, one model lookup, the body decode (off the event loop when
the processor says it is CPU-heavy), one deadline policy, the batcher, leaving the queue when
the client goes away, metric labels and the request log. No HTTP or gRPC type appears here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import Gauge

from service.auth import check_token
from service.batcher import BatchTrace, DynamicBatcher, current_trace
from service.control import LocalControl, RepositoryControl
from service.errors import ClientDisconnected, NotFound, ServingError, ShuttingDown
from service.feeds import Feed, rows_of
from service.inference import DecodedBody, HandlerCall, InferenceRequest, InferenceResult, WireT
from service.metrics import GatewayMetrics
from service.repository import LoadedModel, ModelRepository
from service.settings import Settings
from service.tracing import RequestSpan, Tracing

if TYPE_CHECKING:
    from service.native.frames import HandlerResponse

ResponseT = TypeVar("ResponseT")
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")
request_log = logging.getLogger("service.requests")

CLIENT_GONE = 499
"""Status recorded for a request whose client went away (nginx's convention)."""


@dataclass(slots=True)
class _Record:
    """What one request's body tells the frame around it."""

    span: RequestSpan | None
    code: int = 500
    labels: tuple[str, str] | None = None
    rows: int | None = None
    failure: str | None = None


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
        self.control: RepositoryControl = LocalControl(repository)
        """Where repository API calls go (every worker's repository under `GATEWAY_WORKERS`)."""
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
        with self._served(request.protocol, request.model, request.trace_context) as record:
            self._admit(request.credentials)
            entry = self.repository.get(request.model, request.version)
            record.labels = (entry.name, entry.version)
            model = entry.serving()
            span = record.span
            if span is None:
                feed, body = await self._decode(request, model)
            else:
                with span.child("decode"):
                    feed, body = await self._decode(request, model)
                record.rows = rows_of(feed)
            deadline = self.deadline(request.timeout_ms, body.timeout_ms)
            outputs = await self._submit(
                model.batcher, model.inflight, feed, deadline, request.disconnected
            )
            result = InferenceResult(model, outputs, body)
            if span is None:
                response = encode(result)
            else:
                with span.child("encode"):
                    response = encode(result)
            record.code = 200
            return response

    async def serve_handler(
        self, call: HandlerCall, encode: Callable[[HandlerResponse], ResponseT]
    ) -> ResponseT:
        """Run one request through a TorchServe archive's own handler (`torchserve-native`):
        the body goes to the handler as it came, and its answer (status included) comes back
        as the handler made it."""
        with self._served(call.protocol, call.model, call.trace_context) as record:
            self._admit(call.credentials)
            entry = self.repository.get(call.model, call.version)
            record.labels = (entry.name, entry.version)
            route = entry.handler_route()
            request = await call.read()
            record.rows = 1
            started = time.perf_counter()
            try:
                answer = await self._submit(
                    route.batcher,
                    route.inflight,
                    request,
                    self.deadline(call.timeout_ms),
                    call.disconnected,
                )
            finally:
                route.aliases.request_done(entry.name, entry.version, time.perf_counter() - started)
            record.code = answer.status
            if answer.status >= 400:
                record.failure = answer.reason or f"handler answered {answer.status}"
            return encode(answer)

    def _admit(self, credentials: str | None) -> None:
        self.authorize_inference(credentials)
        if self.draining:
            raise ShuttingDown("server is shutting down")

    @contextlib.contextmanager
    def _served(
        self, protocol: str, model: str, trace_context: Mapping[str, str] | None
    ) -> Iterator[_Record]:
        """Everything around one request, whatever its way through: the active count, the
        span, the metrics and the request log, with the status the body set or raised."""
        started = time.perf_counter()
        span = (
            self.tracing.start_request(protocol, model, trace_context)
            if self.tracing is not None
            else None
        )
        if span is not None and not span.span.is_recording():
            span = None  # not sampled: no children, no batch span, no exemplar
        trace = BatchTrace() if self.settings.log_requests or span is not None else None
        if trace is not None:
            trace.span = span.span if span is not None else None
            current_trace.set(trace)
        record = _Record(span=span)
        self._active += 1
        self._idle.clear()
        try:
            yield record
        except ServingError as error:
            record.code, record.failure = error.status_code, error.message
            raise
        except asyncio.CancelledError:
            record.code = CLIENT_GONE
            raise
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()
            seconds = time.perf_counter() - started
            trace_id = span.trace_id if span is not None else None
            labels = record.labels
            # Only known models and versions become labels, so clients cannot grow the set.
            if labels is not None:
                self.metrics.observe_request(
                    *labels, protocol, record.code, seconds, trace_id=trace_id
                )
            if span is not None and trace is not None:
                span.finish(
                    code=record.code,
                    labels=labels,
                    rows=record.rows,
                    trace=trace,
                    error=record.failure,
                )
            if self.settings.log_requests and trace is not None:
                self._log(protocol, model, labels, record.code, seconds, trace, trace_id)

    async def _decode(
        self, request: InferenceRequest[WireT], model: LoadedModel
    ) -> tuple[Feed, DecodedBody[WireT]]:
        """The wire body, then the feed (off the event loop when the processor says so)."""
        body = await request.decode(model.processor)
        processor = model.processor
        if processor.decodes_heavily(body.inputs):
            return await asyncio.to_thread(processor.feed, body.inputs), body
        return processor.feed(body.inputs), body

    async def _submit(
        self,
        batcher: DynamicBatcher[ItemT, ResultT],
        inflight: Gauge,
        item: ItemT,
        deadline: float | None,
        disconnected: Callable[[], Awaitable[None]] | None,
    ) -> ResultT:
        """Queue `item` on the model's batcher; leave the queue if the client goes away.

        A request that will be dispatched at once has nothing to leave, so it skips the watcher.
        """
        inflight.inc()
        try:
            if disconnected is None or batcher.dispatches_immediately:
                return await batcher.submit(item, deadline=deadline)
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
                return await batcher.submit(item, deadline=deadline)
            except asyncio.CancelledError:
                if not gone:
                    raise
                handler.uncancel()
                raise ClientDisconnected("client disconnected") from None
            finally:
                watcher.cancel()
        finally:
            inflight.dec()

    def _log(
        self,
        protocol: str,
        model: str,
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
                "model": model,
                "version": labels[1] if labels else None,
                "protocol": protocol,
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
