"""TorchServe's own series names, so dashboards built for TorchServe keep working."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter

from service.batcher import BatchObserver


class TorchServeAliases:
    """`ts_inference_requests_total`, `ts_inference_latency_microseconds` and
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
