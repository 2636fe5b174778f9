"""Protocol-neutral inference requests: the one envelope every transport adapter decodes into,
and the per-request frame (`Call`) a served model computes in. Nothing here knows HTTP or gRPC.

An adapter builds an `InferenceRequest` from what it knows before reading the body (protocol,
model, version, credentials, a transport deadline) plus a *body*: how to read the rest. The
data plane looks the model up first, so an unknown model is 404 whatever the body holds, then
hands the body to the served model, which picks its way in (double dispatch, no branch on the
kind of model):

- `TensorBody`: tensors (V2 REST, gRPC, KServe V1), decoded with the model's processor;
- `HandlerBody`: TorchServe's raw request form, for an archive's own handler;
- `PredictionsBody`: TorchServe's `/predictions`, which is either of the two above depending
  on the model (a processor reads the body, or the archive's handler does).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from prometheus_client import Gauge

from service.batcher import Queue
from service.codecs.v2 import InferRequest
from service.errors import ClientDisconnected
from service.feeds import Feed
from service.processing import ModelInputs, ModelProcessor, TensorInputs
from service.sequences import SequenceParameters
from service.tracing import RequestSpan

if TYPE_CHECKING:
    from service.models.served import ServedModel
    from service.models.tensor import TensorModel
    from service.native.frames import HandlerRequest, HandlerResponse

WATCH_AFTER_S = 0.005
"""How long a queued HTTP request waits before a task starts watching for its client leaving.

A watcher is a task per request (~7 µs of a ~58 µs iris request in-process, 32 in flight); a
timer that most requests cancel (iris waits ~2 ms in the queue at c=32) costs far less. What
it gives up: a request dispatched within 5 ms of queueing is computed even if its client left.
"""
WireT = TypeVar("WireT")
"""Whatever the adapter's encoder needs back from its decoder (request id, requested outputs,
whether to answer with a list)."""
ResultT = TypeVar("ResultT")
ItemT = TypeVar("ItemT")
AnswerT = TypeVar("AnswerT")


@dataclass(frozen=True, slots=True)
class DecodedBody(Generic[WireT]):
    inputs: ModelInputs
    wire: WireT
    timeout_ms: float | None = None
    """A deadline the protocol carries in the body (the V2 `timeout` parameter)."""
    classification: Mapping[str, int] = field(default_factory=dict)
    """Outputs to answer as their top k classes (the classification extension): name -> k."""
    priority: int = 0
    """The request's priority level (Triton's `priority` parameter); 0: the model's default."""
    sequence: SequenceParameters | None = None
    """The request's place in a stateful sequence (the sequence extension), if it names one."""


Decoder = Callable[[ModelProcessor], Awaitable[DecodedBody[WireT]]]
RawReader = Callable[[], Awaitable["HandlerRequest"]]


@dataclass(frozen=True, slots=True)
class InferenceResult(Generic[WireT]):
    model: TensorModel
    outputs: Feed
    body: DecodedBody[WireT]


class Call:
    """One admitted request as a served model sees it: its span, its deadline, its client's
    disconnect, and what the request log and metrics record of it."""

    __slots__ = (
        "_default_timeout_ms",
        "_disconnected",
        "_timeout_ms",
        "code",
        "failure",
        "labels",
        "rows",
        "span",
    )

    def __init__(
        self,
        span: RequestSpan | None,
        *,
        timeout_ms: float | None,
        default_timeout_ms: float | None,
        disconnected: Callable[[], Awaitable[None]] | None,
    ) -> None:
        self.span = span
        self._timeout_ms = timeout_ms
        self._default_timeout_ms = default_timeout_ms
        self._disconnected = disconnected
        self.code: int | None = None
        """The status to record; None until the request is answered or fails."""
        self.failure: str | None = None
        self.labels: tuple[str, str] | None = None
        self.rows: int | None = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A child span around one stage (decode, encode) when the request is traced."""
        if self.span is None:
            yield
        else:
            with self.span.child(name):
                yield

    def deadline(self, body_timeout_ms: float | None = None) -> float | None:
        """Absolute deadline (monotonic clock): the shortest of the transport's timeout, the
        body's and the server default."""
        limits = [
            t
            for t in (self._timeout_ms, body_timeout_ms, self._default_timeout_ms)
            if t is not None
        ]
        if not limits:
            return None
        return time.monotonic() + min(limits) / 1000.0

    async def submit(
        self,
        batcher: Queue[ItemT, ResultT],
        inflight: Gauge,
        item: ItemT,
        deadline: float | None,
        priority: int = 0,
    ) -> ResultT:
        """Queue `item` on a model's batcher; leave the queue if the client goes away.

        A request that will be dispatched at once has nothing to leave, so it skips the watcher;
        any other starts watching once it has waited `WATCH_AFTER_S` (a client gone before
        then is seen at that moment, if its request is still queued).
        """
        inflight.inc()
        try:
            disconnected = self._disconnected
            if disconnected is None or batcher.dispatches_immediately:
                return await batcher.submit(item, deadline=deadline, priority=priority)
            handler = asyncio.current_task()
            assert handler is not None
            gone = False
            watcher: asyncio.Task[None] | None = None

            async def watch() -> None:
                nonlocal gone
                await disconnected()
                gone = True
                handler.cancel()

            def start_watching() -> None:
                nonlocal watcher
                watcher = loop.create_task(watch())

            loop = asyncio.get_running_loop()
            timer = loop.call_later(WATCH_AFTER_S, start_watching)
            try:
                return await batcher.submit(item, deadline=deadline, priority=priority)
            except asyncio.CancelledError:
                if not gone:
                    raise
                handler.uncancel()
                raise ClientDisconnected("client disconnected") from None
            finally:
                timer.cancel()
                if watcher is not None:
                    watcher.cancel()
        finally:
            inflight.dec()


class RequestBody(ABC, Generic[AnswerT]):
    """How the rest of a request is read, and which way into a served model it takes."""

    @abstractmethod
    async def run(self, model: ServedModel, call: Call) -> AnswerT:
        """Compute the answer with `model`."""


@dataclass(frozen=True, slots=True)
class TensorBody(RequestBody[InferenceResult[WireT]]):
    decode: Decoder[WireT]

    async def run(self, model: ServedModel, call: Call) -> InferenceResult[WireT]:
        return await model.infer(self.decode, call)


@dataclass(frozen=True, slots=True)
class HandlerBody(RequestBody["HandlerResponse"]):
    read: RawReader

    async def run(self, model: ServedModel, call: Call) -> HandlerResponse:
        return await model.handle(self.read, call)


@dataclass(frozen=True, slots=True)
class PredictionsBody(RequestBody["HandlerResponse"]):
    """TorchServe's `/predictions`: an archive's handler reads the request as it came
    (`read`); any other model decodes it with its processor (`decode`) and answers with
    `answer(result)`, in the same raw form a handler answers."""

    decode: Decoder[bool]
    read: RawReader
    answer: Callable[[InferenceResult[bool]], HandlerResponse]

    async def run(self, model: ServedModel, call: Call) -> HandlerResponse:
        return await model.predict(self, call)


@dataclass(frozen=True, slots=True)
class InferenceRequest(Generic[AnswerT]):
    protocol: str
    """Metric and log label: `v2`, `grpc`, `torchserve`, `v1`."""
    model: str
    version: str | None
    body: RequestBody[AnswerT]
    credentials: str | None = None
    """The bearer token the client presented, if any."""
    timeout_ms: float | None = None
    """A deadline the transport carries (a header, the gRPC deadline)."""
    disconnected: Callable[[], Awaitable[None]] | None = None
    """Returns once the client has gone away (HTTP); None where the transport cancels the
    handler itself (gRPC)."""
    trace_context: Mapping[str, str] | None = None
    """The caller's `traceparent` / `tracestate`, when it sent them."""


def v2_body(decoded: InferRequest) -> DecodedBody[InferRequest]:
    """An Open Inference Protocol request (REST or gRPC, decoded alike) as the protocol-neutral
    body: its tensors, and what its parameters ask of the model."""
    return DecodedBody(
        TensorInputs(decoded.inputs),
        decoded,
        decoded.timeout_ms,
        decoded.classification,
        decoded.priority,
        decoded.sequence,
    )
