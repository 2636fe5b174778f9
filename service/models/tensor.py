"""A tensor model: a processor (client payloads <-> feeds), a dynamic batcher and a backend.
Our `model.json` models are served this way, and archives that declare tensors too."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

from service.backends.base import Backend
from service.batcher import BatchTracer, DynamicBatcher
from service.compute import BatchRunner, InlinePolicy
from service.errors import InvalidInput
from service.feeds import Feed, rows_of
from service.inference import Call, DecodedBody, Decoder, InferenceResult, WireT
from service.input_limits import Limits
from service.manifest import Manifest, SeriesPreprocessing, TabularPreprocessing, ValueRange
from service.metrics import GatewayMetrics
from service.models.served import ModelMetadata, ServedModel
from service.processing import Processor, warmup_feed
from service.settings import Settings

PLATFORMS = {
    "onnxruntime": "onnxruntime_onnx",
    "torchscript": "pytorch_libtorch",
    "pt2": "pytorch_aoti",
    "torchserve": "torchserve",
}
"""Backend name -> the platform name Triton's clients know."""


@dataclass(frozen=True, slots=True)
class ServingContext:
    """What every loader builds served models with."""

    settings: Settings
    metrics: GatewayMetrics
    tracer: BatchTracer | None
    limits: Limits

    @classmethod
    def of(
        cls, settings: Settings, metrics: GatewayMetrics, tracer: BatchTracer | None
    ) -> ServingContext:
        limits = Limits(
            max_image_pixels=settings.max_image_pixels,
            max_text_chars=settings.max_text_chars,
            max_bytes_elements=settings.max_bytes_elements,
        )
        return cls(settings, metrics, tracer, limits)


class TensorModel(ServedModel):
    def __init__(
        self,
        name: str,
        version: str,
        manifest: Manifest,
        processor: Processor,
        backend: Backend,
        batcher: DynamicBatcher[Feed, Feed],
        inflight: Gauge,
    ) -> None:
        super().__init__(name, version)
        self.manifest = manifest
        self.processor = processor
        self.backend = backend
        self.batcher = batcher
        self.inflight = inflight

    @property
    def description(self) -> str:
        return self.backend.description

    def metadata(self) -> ModelMetadata:
        backend = self.backend.name
        return ModelMetadata(
            platform=PLATFORMS.get(backend, backend),
            inputs=[spec.model_dump() for spec in self.processor.input_specs],
            outputs=[spec.model_dump() for spec in self.manifest.outputs],
            parameters={
                "task": self.manifest.task.value,
                "max_batch_size": self.batcher.max_batch_size,
                "labels": self.manifest.labels,
                **input_parameters(self.manifest),
            },
        )

    async def healthy(self) -> bool:
        return await self.backend.healthy()

    async def infer(self, decode: Decoder[WireT], call: Call) -> InferenceResult[WireT]:
        with call.stage("decode"):
            feed, body = await self._decode(decode)
        call.rows = rows_of(feed)
        outputs = await call.submit(
            self.batcher, self.inflight, feed, call.deadline(body.timeout_ms)
        )
        return InferenceResult(self, outputs, body)

    async def _decode(self, decode: Decoder[WireT]) -> tuple[Feed, DecodedBody[WireT]]:
        """The wire body, then the feed (off the event loop when the processor says so)."""
        body = await decode(self.processor)
        processor = self.processor
        if processor.decodes_heavily(body.inputs):
            return await asyncio.to_thread(processor.feed, body.inputs), body
        return processor.feed(body.inputs), body

    async def warm_up(self) -> None:
        """Run batch 1 and the max batch once, so the first real request is not slow."""
        for rows in sorted({1, self.batcher.max_batch_size}):
            outputs = await self.backend.infer(warmup_feed(self.manifest, rows))
            expected = {spec.name for spec in self.manifest.outputs}
            if set(outputs) != expected:
                raise InvalidInput(
                    f"model outputs {sorted(outputs)}, manifest says {sorted(expected)}"
                )

    async def close(self) -> None:
        await self.batcher.close()
        await self.backend.close()


async def start_tensor_model(
    context: ServingContext,
    name: str,
    version: str,
    manifest: Manifest,
    processor: Processor,
    backend: Backend,
) -> TensorModel:
    """A tensor model around a loaded backend, with its batcher, warmed up."""
    settings = context.settings
    max_batch = settings.max_batch_size or manifest.batching.max_batch_size
    observer = context.metrics.observer(name, version)
    run_batch = BatchRunner(
        backend, inline=InlinePolicy(settings.inline_batch_max_ms / 1000.0), observer=observer
    )
    batcher: DynamicBatcher[Feed, Feed] = DynamicBatcher(
        run_batch,
        max_batch_size=max_batch,
        max_queue_size=max(settings.max_queue_size, max_batch),
        max_queue_delay_s=settings.max_queue_delay_ms / 1000.0,
        instances=settings.instances,
        rows_of=rows_of,
        observer=observer,
        tracer=context.tracer,
    )
    model = TensorModel(
        name,
        version,
        manifest,
        processor,
        backend,
        batcher,
        context.metrics.inflight.labels(name, version),
    )
    try:
        await model.warm_up()
    except BaseException:
        await batcher.close()
        raise
    return model


def input_parameters(manifest: Manifest) -> dict[str, Any]:
    """What a client needs to build a sensible input: tabular features with their training
    ranges (raw units), a forecaster's window and horizon."""
    pre = manifest.preprocessing
    if isinstance(pre, TabularPreprocessing):
        ranges: list[ValueRange | None] = [*(pre.feature_ranges or [])] or [None] * len(
            pre.feature_names
        )
        features = [
            {"name": name, **({"min": r.min, "max": r.max} if r else {})}
            for name, r in zip(pre.feature_names, ranges, strict=True)
        ]
        extra: dict[str, Any] = {"features": features}
        if pre.target_range is not None:
            extra["target_range"] = [pre.target_range.min, pre.target_range.max]
        return extra
    if isinstance(pre, SeriesPreprocessing):
        extra = {"window": pre.window, "horizon": pre.horizon}
        if pre.value_range is not None:
            extra["value_range"] = [pre.value_range.min, pre.value_range.max]
        return extra
    return {}
