"""Prometheus metrics, in a registry owned by the app (nothing global, nothing at import)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from service.backends.base import BatchTiming
from service.statistics import ModelStatistics

# From 100 µs (a tiny CPU model) to 10 s (a large GPU batch under load).
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = openmetrics.CONTENT_TYPE_LATEST
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set by `service.supervisor` for its workers: metric values then live in files there, one set
per process, and a scrape of any worker sums them (prometheus-client's multiprocess mode)."""


class GatewayMetrics:
    """Every metric the gateway exports; label names: model, version (+ protocol, code)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = os.environ.get(MULTIPROCESS_DIR_ENV)
        """Under `GATEWAY_WORKERS` > 1: where every worker's values are (see `render`)."""
        self._own_collectors: list[Collector] = []
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "Inference requests answered, by protocol and HTTP status.",
            ["model", "version", "protocol", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from request decoded to response encoded, per request.",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_duration = Histogram(
            "gateway_queue_duration_seconds",
            "Time a request waited in the batch queue.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_duration = Histogram(
            "gateway_compute_duration_seconds",
            "Time per batch from dispatch to results: the gateway_batch_* parts, then answering.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Triton's split of compute (compute_input / compute_infer / compute_output), plus the
        # hop between the event loop and the compute thread, which Triton does not have.
        self.batch_input = Histogram(
            "gateway_batch_input_seconds",
            "Input preparation per batch: merge, pad, conversion to the runtime's input type.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_backend = Histogram(
            "gateway_batch_backend_seconds",
            "The runtime call alone per batch (e.g. ONNX Runtime's session.run).",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_output = Histogram(
            "gateway_batch_output_seconds",
            "Output conversion and split back per request, per batch.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_handoff = Histogram(
            "gateway_batch_handoff_seconds",
            "Event loop to compute thread and back, per batch (0 for a batch run inline).",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "gateway_batch_size",
            "Rows per computed batch.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_failures = Counter(
            "gateway_batch_failures",
            "Batches whose backend call failed.",
            ["model", "version"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "gateway_queue_depth",
            "Rows waiting in the batch queue.",
            ["model", "version"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.inflight = Gauge(
            "gateway_inflight_requests",
            "Inference requests being handled.",
            ["model", "version"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self._request_children: dict[
            tuple[str, str, str, int], tuple[Counter, Histogram, ModelStatistics]
        ] = {}
        self.statistics: dict[tuple[str, str], ModelStatistics] = {}
        """Triton-form statistics per model version, fed by the same calls as the series."""
        self.model_ready = Gauge(
            "gateway_model_ready",
            "1 when the model version is ready to serve (on all workers).",
            ["model", "version"],
            multiprocess_mode="livemin",
            registry=r,
        )

        # Issue 23, defect 8: calls refused by `service.grpc.admission` before they run.
        self.grpc_refused = Counter(
            "gateway_grpc_calls_refused",
            "gRPC calls answered UNAVAILABLE because grpc_max_concurrent_calls were running.",
            ["method"],
            registry=r,
        )

        # Issue 23, defect 9: native handler workers replaced by `HandlerPool` on purpose.
        self.handler_recycles = Counter(
            "gateway_handler_worker_recycles",
            "Native handler workers replaced on purpose, by reason (memory: past "
            "torchserve_worker_max_rss_mb after a batch).",
            ["model", "reason"],
            registry=r,
        )

        self.live_sequences = Gauge(
            "gateway_sequences_live",
            "Sequences holding state in a sequence model version.",
            ["model", "version"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.sequences_freed_idle = Counter(
            "gateway_sequences_freed_idle",
            "Sequences freed after max_sequence_idle_microseconds without a request.",
            ["model", "version"],
            registry=r,
        )

    def sequence_observer(self, model: str, version: str) -> SequenceMetrics:
        return SequenceMetrics(self, model, version)

    def observe_request(
        self,
        model: str,
        version: str,
        protocol: str,
        code: int,
        seconds: float,
        *,
        trace_id: str | None = None,
    ) -> None:
        """Count a request (and time it when it succeeded); label children are cached. A sampled
        request's trace id becomes the duration's exemplar (OpenMetrics exposition only)."""
        key = (model, version, protocol, code)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(model, version, protocol, str(code)),
                self.request_duration.labels(model, version, protocol),
                self.statistics_of(model, version),
            )
            self._request_children[key] = children
        children[0].inc()
        children[2].request_done(code == 200, seconds)
        if code == 200:
            if trace_id is None:
                children[1].observe(seconds)
            else:
                children[1].observe(seconds, exemplar={"trace_id": trace_id})

    def observer(self, model: str, version: str) -> ModelObserver:
        return ModelObserver(self, model, version)

    def statistics_of(self, model: str, version: str) -> ModelStatistics:
        """The Triton-form statistics of one model version (this process's)."""
        key = (model, version)
        found = self.statistics.get(key)
        if found is None:
            found = self.statistics[key] = ModelStatistics(model, version)
        return found

    def add_gpu_collector(self) -> bool:
        """Export GPU memory and utilization when NVML is importable and finds a GPU."""
        try:
            import pynvml  # nvidia-ml-py, installed by the `gpu` extra

            pynvml.nvmlInit()
        except Exception:
            return False
        collector = _GpuCollector(pynvml)
        self.registry.register(collector)
        self._own_collectors.append(collector)
        return True

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition and its content type: OpenMetrics (with exemplars) when the scraper
        asks for it in `Accept`, else the Prometheus text format.

        With workers, every worker's values summed (gauges as their `multiprocess_mode` says:
        queue depth and in-flight summed over live workers, readiness the minimum); there are
        no exemplars then (prometheus-client's multiprocess mode does not keep them)."""
        registry = self._exposed()
        if accept and OPENMETRICS_CONTENT_TYPE.split(";")[0] in accept:
            exposition: bytes = openmetrics.generate_latest(registry)  # type: ignore[no-untyped-call]
            return exposition, OPENMETRICS_CONTENT_TYPE
        return generate_latest(registry), CONTENT_TYPE

    def _exposed(self) -> CollectorRegistry:
        if self.multiprocess_dir is None:
            return self.registry
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        for collector in self._own_collectors:
            merged.register(collector)
        return merged


class ModelObserver:
    """Batcher observer bound to one model version's label values."""

    def __init__(self, metrics: GatewayMetrics, model: str, version: str) -> None:
        self._queue = metrics.queue_duration.labels(model, version)
        self._compute = metrics.compute_duration.labels(model, version)
        self._batch = metrics.batch_size.labels(model, version)
        self._failures = metrics.batch_failures.labels(model, version)
        self._depth = metrics.queue_depth.labels(model, version)
        self._input = metrics.batch_input.labels(model, version)
        self._backend = metrics.batch_backend.labels(model, version)
        self._output = metrics.batch_output.labels(model, version)
        self._handoff = metrics.batch_handoff.labels(model, version)
        self._statistics = metrics.statistics_of(model, version)

    def batch_started(self, rows: int, queue_seconds: Sequence[float]) -> None:
        self._batch.observe(rows)
        for seconds in queue_seconds:
            self._queue.observe(seconds)
        self._statistics.batch_started(queue_seconds)

    def batch_finished(self, rows: int, compute_seconds: float, failed: bool) -> None:
        self._compute.observe(compute_seconds)
        if failed:
            self._failures.inc()

    def queue_changed(self, rows: int) -> None:
        self._depth.set(rows)

    def batch_timed(self, timing: BatchTiming) -> None:
        self._input.observe(timing.input_s)
        self._backend.observe(timing.backend_s)
        self._output.observe(timing.output_s)
        self._handoff.observe(timing.handoff_s)
        self._statistics.batch_timed(timing)


class SequenceMetrics:
    """Sequence batcher observer bound to one model version's label values."""

    def __init__(self, metrics: GatewayMetrics, model: str, version: str) -> None:
        self._live = metrics.live_sequences.labels(model, version)
        self._freed = metrics.sequences_freed_idle.labels(model, version)

    def sequences_changed(self, live: int) -> None:
        self._live.set(live)

    def sequence_freed_idle(self) -> None:
        self._freed.inc()


class _GpuCollector(Collector):
    def __init__(self, nvml: object) -> None:
        self.nvml = nvml

    def collect(self) -> Iterator[GaugeMetricFamily]:
        nvml = self.nvml
        used = GaugeMetricFamily(
            "gateway_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"]
        )
        total = GaugeMetricFamily(
            "gateway_gpu_memory_total_bytes", "GPU memory size.", labels=["gpu"]
        )
        util = GaugeMetricFamily(
            "gateway_gpu_utilization_ratio", "GPU busy ratio (0..1).", labels=["gpu"]
        )
        for index in range(nvml.nvmlDeviceGetCount()):  # type: ignore[attr-defined]
            handle = nvml.nvmlDeviceGetHandleByIndex(index)  # type: ignore[attr-defined]
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)  # type: ignore[attr-defined]
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)  # type: ignore[attr-defined]
            used.add_metric([str(index)], memory.used)
            total.add_metric([str(index)], memory.total)
            util.add_metric([str(index)], rates.gpu / 100.0)
        yield from (used, total, util)
