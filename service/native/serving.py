"""One archive served natively: its worker pool, the raw TorchServe way in (`/predictions`),
and, for archives that declare tensors (our `model.json`), the tensor way in (V2, gRPC, V1).

The raw way batches client requests as they are (body, headers, content type) and hands the
batch to a worker exactly as TorchServe's front end would; the handler's per-request statuses
come back. The tensor way sends one pre-batched `.npz` request per gateway batch.
"""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from service.backends.base import Backend
from service.backends.tensor_payload import CONTENT_TYPE, encode_feed
from service.backends.torchserve import answer_error, tensor_answer
from service.batcher import BatchObserver, BatchTracer, DynamicBatcher
from service.errors import BackendError, ServingError
from service.feeds import Feed, rows_of
from service.manifest import Manifest
from service.native.archives import ExtractedArchive, ServingOptions
from service.native.frames import HandlerRequest, HandlerResponse, Parameter, WorkerReply
from service.native.workers import WorkerPool

log = logging.getLogger(__name__)

_request_ids = itertools.count()


def next_request_id() -> str:
    return f"gw-{next(_request_ids)}"


def batch_failure(reply: WorkerReply) -> HandlerResponse | None:
    """The whole batch failed (the handler raised): TorchServe answers every request with
    `{"code", "type", "message"}` and the worker's code."""
    if reply.code == 200:
        return None
    return HandlerResponse(
        reply.code,
        "",
        "application/json",
        torchserve_error_body(reply.code, reply.message),
        {},
    )


TORCHSERVE_ERROR_TYPES = {
    400: "BadRequestException",
    401: "InvalidKeyException",
    404: "ModelNotFoundException",
    405: "MethodNotAllowedException",
    413: "RequestEntityTooLargeException",
    503: "ServiceUnavailableException",
    504: "RequestTimeoutException",
}


def torchserve_error_body(code: int, message: str, kind: str | None = None) -> bytes:
    """TorchServe's error JSON: its three keys, pretty-printed with two-space indents as its
    front end writes them."""
    kind = kind or ("InternalServerException" if code >= 500 else "BadRequestException")
    return (
        f'{{\n  "code": {code},\n  "type": "{kind}",\n  "message": {_json_string(message)}\n}}'
    ).encode()


def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


class TorchServeAliases:
    """TorchServe's own series names, so dashboards built for TorchServe keep working:
    `ts_inference_requests_total`, `ts_inference_latency_microseconds` and
    `ts_queue_latency_microseconds` (counters labelled uuid, model_name, model_version)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.uuid = str(uuid.uuid4())
        labels = ["uuid", "model_name", "model_version"]
        self.requests = Counter(
            "ts_inference_requests",
            "Total number of inference requests.",
            labels,
            registry=registry,
        )
        self.latency = Counter(
            "ts_inference_latency_microseconds",
            "Cumulative inference duration in microseconds",
            labels,
            registry=registry,
        )
        self.queue = Counter(
            "ts_queue_latency_microseconds",
            "Cumulative queue duration in microseconds",
            labels,
            registry=registry,
        )

    def observer(self, inner: BatchObserver, model: str, version: str) -> BatchObserver:
        return _QueueAlias(inner, self.queue.labels(self.uuid, model, version))

    def request_done(self, model: str, version: str, seconds: float) -> None:
        self.requests.labels(self.uuid, model, version).inc()
        self.latency.labels(self.uuid, model, version).inc(seconds * 1e6)


class _QueueAlias:
    def __init__(self, inner: BatchObserver, queue: Counter) -> None:
        self._inner = inner
        self._queue = queue

    def queue_changed(self, rows: int) -> None:
        self._inner.queue_changed(rows)

    def batch_started(self, rows: int, queue_seconds: Sequence[float]) -> None:
        self._inner.batch_started(rows, queue_seconds)
        self._queue.inc(sum(queue_seconds) * 1e6)

    def batch_finished(self, rows: int, compute_seconds: float, failed: bool) -> None:
        self._inner.batch_finished(rows, compute_seconds, failed)


@dataclass(eq=False)
class HandlerRoute:
    """An archive's raw way in: the batcher of client requests and the worker pool."""

    name: str
    version: str
    archive: ExtractedArchive
    options: ServingOptions
    pool: WorkerPool
    batcher: DynamicBatcher[HandlerRequest, HandlerResponse] = field(repr=False)
    inflight: Gauge = field(repr=False)
    aliases: TorchServeAliases = field(repr=False)

    async def close(self) -> None:
        await self.batcher.close()
        await self.pool.close()


def handler_batch_function(
    pool: WorkerPool,
) -> Callable[[list[HandlerRequest]], Awaitable[list[HandlerResponse]]]:
    """The batch function of an archive's raw way in: one worker call per batch."""

    async def run(batch: list[HandlerRequest]) -> list[HandlerResponse]:
        reply = await pool.run(batch)
        failure = batch_failure(reply)
        if failure is not None:
            return [failure] * len(batch)
        if len(reply.predictions) != len(batch):
            raise BackendError(
                f"worker answered {len(reply.predictions)} predictions for {len(batch)} requests"
            )
        return reply.predictions

    return run


class NativeTensorBackend(Backend):
    """V2/gRPC/V1 batches for an archive that declares tensors: one `.npz` request per batch,
    answered by the archive's own handler in a worker."""

    name = "torchserve-native"

    def __init__(self, manifest: Manifest, pool: WorkerPool) -> None:
        super().__init__(manifest)
        self.pool = pool
        self._output_names = [spec.name for spec in manifest.outputs]

    @property
    def description(self) -> str:
        workers = len(self.pool.live_workers)
        return f"{self.name}[{self.pool.spec.handler}, {workers} worker(s)]"

    async def load(self) -> None:
        """The pool is started by the archive loader; nothing more to load."""

    async def healthy(self) -> bool:
        return self.pool.ready

    async def infer(self, feed: Feed) -> Feed:
        request = HandlerRequest(
            next_request_id(),
            (Parameter("body", encode_feed(feed), CONTENT_TYPE),),
            (("content-type", CONTENT_TYPE),),
        )
        reply = await self.pool.run([request])
        failure = batch_failure(reply)
        answer = failure if failure is not None else reply.predictions[0]
        if answer.status != 200:
            raise answer_error(answer.status, answer.body, f"handler {self.pool.spec.handler}")
        return tensor_answer(
            answer.content_type, answer.body, rows_of(feed), self._output_names, "handler"
        )


def make_handler_route(
    name: str,
    version: str,
    archive: ExtractedArchive,
    options: ServingOptions,
    pool: WorkerPool,
    *,
    max_queue_size: int,
    max_queue_delay_s: float,
    observer: BatchObserver,
    tracer: BatchTracer | None,
    inflight: Gauge,
    aliases: TorchServeAliases,
) -> HandlerRoute:
    batcher: DynamicBatcher[HandlerRequest, HandlerResponse] = DynamicBatcher(
        handler_batch_function(pool),
        max_batch_size=options.batch_size,
        max_queue_size=max(max_queue_size, options.batch_size),
        max_queue_delay_s=max_queue_delay_s,
        instances=max(1, pool.target),
        observer=aliases.observer(observer, name, version),
        tracer=tracer,
    )
    return HandlerRoute(name, version, archive, options, pool, batcher, inflight, aliases)


def manifest_in(archive: ExtractedArchive) -> Manifest | None:
    """Our `model.json`, when the archive ships one (then V2 and gRPC serve it too)."""
    from service.manifest import MANIFEST_FILE

    if not (archive.path / MANIFEST_FILE).is_file():
        return None
    try:
        return Manifest.read(archive.path)
    except (ValueError, ServingError) as error:
        log.warning(
            "%s: model.json unreadable (%s); serving /predictions only", archive.path, error
        )
        return None
