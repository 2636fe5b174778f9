"""OpenTelemetry traces that understand batches. Off by default, and then nothing here runs: no
tracer provider, no exporter thread, the SDK never imported. (FastAPI itself imports the
OpenTelemetry API when it is installed and traces through its no-op default; the inference
routes bypass FastAPI's stack anyway, see `service.fastpath`.)

A request gets a server span (continuing the caller's `traceparent`, from an HTTP header or gRPC
metadata) with children for decode, queue wait and encode. The batch that served it gets one
span, a child of the first traced request in it, linked to every request span it served; each
request span links back to its batch. So a slow request's trace shows how long it queued,
which batch it rode in, and (through the batch's links) its siblings.

Spans go to an OTLP/HTTP collector (`GATEWAY_OTLP_ENDPOINT`, else the standard
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`); sampling is
`GATEWAY_TRACE_SAMPLE_RATIO` (parent-based), else the standard `OTEL_TRACES_SAMPLER` variables;
`OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` name the service.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from service.batcher import BatchFacts, BatchTrace, current_batch
from service.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import Span

SERVICE_NAME = "model-serving-gateway"
TRACE_HEADERS = ("traceparent", "tracestate")
"""What a caller sends to continue its trace (W3C Trace Context), on HTTP and gRPC alike."""


class RequestSpan:
    """One request's server span and its children."""

    __slots__ = ("_tracing", "span")

    def __init__(self, tracing: Tracing, span: Span) -> None:
        self._tracing = tracing
        self.span = span

    @property
    def trace_id(self) -> str | None:
        """Hex trace id when this request is sampled (for logs and exemplars)."""
        context = self.span.get_span_context()
        return format(context.trace_id, "032x") if context.trace_flags.sampled else None

    @contextlib.contextmanager
    def child(self, name: str) -> Iterator[None]:
        from opentelemetry import trace

        with self._tracing.tracer.start_as_current_span(
            name, context=trace.set_span_in_context(self.span), record_exception=False
        ):
            yield

    def finish(
        self,
        *,
        code: int,
        labels: tuple[str, str] | None,
        rows: int | None,
        trace: BatchTrace,
        error: str | None,
    ) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        if labels is not None:
            span.set_attribute("gateway.model_version", labels[1])
        if rows is not None:
            span.set_attribute("gateway.rows", rows)
        span.set_attribute("gateway.status_code", code)
        batch = trace.batch_span
        if batch is not None:
            span.add_link(batch.get_span_context(), {"gateway.link": "batch"})  # type: ignore[attr-defined]
            span.set_attribute("gateway.batch_rows", trace.batch_rows)
        if code >= 500 or (code >= 400 and error is not None and code != 499):
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()


class Tracing:
    """The app's tracer provider, exporter and propagator; also the batcher's `BatchTracer`."""

    def __init__(self, settings: Settings, *, processor: SpanProcessor | None = None) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        sampler = None  # None: the SDK reads OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG
        if settings.trace_sample_ratio is not None:
            sampler = ParentBased(TraceIdRatioBased(settings.trace_sample_ratio))
        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
        self.provider = TracerProvider(sampler=sampler, resource=Resource.create(attributes))
        if processor is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("service")
        self.propagator = TraceContextTextMapPropagator()
        # Batcher times are on the monotonic clock; spans want the epoch.
        self._epoch_offset_ns = time.time_ns() - time.monotonic_ns()

    def shutdown(self) -> None:
        """Export what is buffered and stop the exporter's thread."""
        self.provider.shutdown()

    def _epoch_ns(self, monotonic_s: float) -> int:
        return int(monotonic_s * 1e9) + self._epoch_offset_ns

    # -- requests (the data plane) ---------------------------------------------------------------

    def start_request(
        self, protocol: str, model: str, carrier: Mapping[str, str] | None
    ) -> RequestSpan:
        from opentelemetry.trace import SpanKind

        parent = self.propagator.extract(carrier) if carrier else None
        span = self.tracer.start_span(
            f"infer {model}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"gateway.protocol": protocol, "gateway.model": model},
        )
        return RequestSpan(self, span)

    # -- batches (service.batcher.BatchTracer) -----------------------------------------------------

    @contextlib.contextmanager
    def batch(
        self,
        members: Sequence[BatchTrace],
        *,
        rows: int,
        instance: int,
        enqueued: Sequence[float],
        started: float,
    ) -> Iterator[None]:
        from opentelemetry import context, trace
        from opentelemetry.trace import Link

        spans: list[Any] = [member.span for member in members]
        for span, queued_at in zip(spans, enqueued, strict=True):
            self.tracer.start_span(
                "queue",
                context=trace.set_span_in_context(span),
                start_time=self._epoch_ns(queued_at),
            ).end(end_time=self._epoch_ns(started))
        batch_span = self.tracer.start_span(
            "batch",
            context=trace.set_span_in_context(spans[0]),
            links=[Link(span.get_span_context(), {"gateway.link": "request"}) for span in spans],
            start_time=self._epoch_ns(started),
            attributes={
                "gateway.batch_rows": rows,
                "gateway.batch_requests": len(spans),
                "gateway.instance": instance,
            },
        )
        for member in members:
            member.batch_span = batch_span
        facts = BatchFacts()
        facts_token = current_batch.set(facts)
        context_token = context.attach(trace.set_span_in_context(batch_span))
        try:
            yield
        finally:
            context.detach(context_token)
            current_batch.reset(facts_token)
            batch_span.set_attribute("gateway.backend_ms", round(facts.backend_s * 1000, 3))
            batch_span.set_attribute("gateway.padded_elements", facts.padded_elements)
            batch_span.end()


def outgoing_headers() -> dict[str, str]:
    """`traceparent` (and `tracestate`) of the current span, for a call to another server."""
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier
