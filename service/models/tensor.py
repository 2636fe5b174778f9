"""A tensor model: a processor (client payloads <-> feeds), a dynamic batcher and a backend.
Our `model.json` models are served this way, and archives that declare tensors too."""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

from service.backends.base import Backend
from service.batcher import BatchTracer, DynamicBatcher, Queue
from service.compute import BatchRunner, InlinePolicy
from service.errors import InvalidInput
from service.feeds import Feed, rows_of
from service.inference import Call, DecodedBody, Decoder, InferenceResult, WireT
from service.input_limits import Limits
from service.manifest import Manifest, SeriesPreprocessing, TabularPreprocessing, ValueRange
from service.metrics import GatewayMetrics
from service.models.classification import classify
from service.models.served import ModelMetadata, ServedModel
from service.processing import ModelProcessor, Processor, warmup_feed
from service.settings import Settings

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

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
        return cls(settings, metrics, tracer, settings.input_limits)


@dataclass(frozen=True, slots=True)
class BatchingPlan:
    """How a tensor model's requests are batched and computed."""

    max_batch_size: int
    """Rows per batch; with `batched` False, requests per batch (always 1)."""
    max_queue_size: int
    max_queue_delay_s: float
    instances: int
    batched: bool = True
    """False: the model has no batch dimension; each request runs alone, as it came."""

    @classmethod
    def from_settings(cls, settings: Settings, max_batch_size: int) -> BatchingPlan:
        max_batch = settings.max_batch_size or max_batch_size
        return cls(
            max_batch_size=max_batch,
            max_queue_size=max(settings.max_queue_size, max_batch),
            max_queue_delay_s=settings.max_queue_delay_ms / 1000.0,
            instances=settings.instances,
        )


def build_batcher(
    context: ServingContext, name: str, version: str, backend: Backend, plan: BatchingPlan
) -> DynamicBatcher[Feed, Feed]:
    """The dynamic batcher of one tensor model version, computing through `backend`."""
    observer = context.metrics.observer(name, version)
    run_batch = BatchRunner(
        backend,
        inline=InlinePolicy(context.settings.inline_batch_max_ms / 1000.0),
        observer=observer,
        batched=plan.batched,
    )
    return DynamicBatcher(
        run_batch,
        max_batch_size=plan.max_batch_size if plan.batched else 1,
        max_queue_size=max(plan.max_queue_size, plan.max_batch_size),
        max_queue_delay_s=plan.max_queue_delay_s,
        instances=plan.instances,
        rows_of=rows_of if plan.batched else (lambda _feed: 1),
        at_once=run_batch.runs_at_once,
        observer=observer,
        tracer=context.tracer,
    )


class TensorModel(ServedModel):
    """Tensors in and out through a processor, a dynamic batcher and a backend. Kinds differ
    in what describes them (metadata, configuration) and how they warm up."""

    def __init__(
        self,
        name: str,
        version: str,
        processor: ModelProcessor,
        backend: Backend,
        batcher: Queue[Any, Feed],
        inflight: Gauge,
    ) -> None:
        super().__init__(name, version)
        self.processor = processor
        self.backend = backend
        self.batcher = batcher
        self.inflight = inflight

    @property
    def description(self) -> str:
        return self.backend.description

    async def healthy(self) -> bool:
        return await self.backend.healthy()

    async def infer(self, decode: Decoder[WireT], call: Call) -> InferenceResult[WireT]:
        if call.span is None:  # the common case: no context manager per request
            feed, body = await self._decode(decode)
        else:
            with call.stage("decode"):
                feed, body = await self._decode(decode)
            call.rows = self.batcher_rows(feed)
        outputs = await call.submit(
            self.batcher,
            self.inflight,
            feed,
            call.deadline(self.timeout_ms(body.timeout_ms)),
            self.priority_level(body.priority),
        )
        outputs = self.answer(outputs)
        if body.classification:
            outputs = classify(outputs, body.classification, self.labels_of, batched=self.batched)
        return InferenceResult(self, outputs, body)

    def priority_level(self, requested: int) -> int:
        """The batcher's priority for a request that asked for `requested` (0: none)."""
        return 0

    def timeout_ms(self, requested_ms: float | None) -> float | None:
        """The queueing timeout of a request that asked for `requested_ms` (or nothing)."""
        return requested_ms

    @property
    def batched(self) -> bool:
        """Whether the first dimension of every tensor is the batch."""
        return True

    def answer(self, outputs: Feed) -> Feed:
        """The backend's outputs as clients get them."""
        return outputs

    def labels_of(self, output: str) -> Sequence[str] | None:
        """The class labels of an output, if it has any."""
        return None

    def batcher_rows(self, feed: Feed) -> int:
        return rows_of(feed)

    async def _decode(self, decode: Decoder[WireT]) -> tuple[Feed, DecodedBody[WireT]]:
        """The wire body, then the feed (off the event loop when the processor says so)."""
        body = await decode(self.processor)
        plan = self.processor.plan(body.inputs)
        if plan.heavy:
            return await asyncio.to_thread(plan.run), body
        return plan.run(), body

    @abstractmethod
    def warmup_feeds(self) -> list[Feed]:
        """Feeds to run once before serving, so the first real request is not slow."""

    async def warm_up(self) -> None:
        expected = {spec.name for spec in self.backend.signature.outputs}
        for feed in self.warmup_feeds():
            outputs = await self.backend.infer(feed)
            if set(outputs) != expected:
                raise InvalidInput(
                    f"model outputs {sorted(outputs)}, its description says {sorted(expected)}"
                )

    async def close(self) -> None:
        await self.batcher.close()
        await self.backend.close()


class ManifestModel(TensorModel):
    """One of our `model.json` models: a task's processor, described by its manifest."""

    batcher: DynamicBatcher[Feed, Feed]

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
        super().__init__(name, version, processor, backend, batcher, inflight)
        self.manifest = manifest
        self.task = processor

    @property
    def platform(self) -> str:
        backend = self.backend.name
        return PLATFORMS.get(backend, backend)

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(
            platform=self.platform,
            inputs=[spec.model_dump() for spec in self.task.input_specs],
            outputs=[spec.model_dump() for spec in self.manifest.outputs],
            parameters={
                "task": self.manifest.task.value,
                "max_batch_size": self.batcher.max_batch_size,
                "labels": self.manifest.labels,
                **input_parameters(self.manifest),
            },
        )

    def labels_of(self, output: str) -> Sequence[str] | None:
        """The manifest's labels name the classes of its first output."""
        return self.manifest.labels if output == self.manifest.outputs[0].name else None

    def config(self) -> ModelConfig:
        from service.triton.manifest_config import config_from_manifest

        return config_from_manifest(self.manifest, self.platform, self.batcher.max_batch_size)

    def warmup_feeds(self) -> list[Feed]:
        """Batch 1 and the max batch."""
        return [
            warmup_feed(self.manifest, rows) for rows in sorted({1, self.batcher.max_batch_size})
        ]


async def started(model: TensorModel) -> TensorModel:
    """`model`, warmed up; its batcher closed if it cannot warm up."""
    try:
        await model.warm_up()
    except BaseException:
        await model.batcher.close()
        raise
    return model


async def start_manifest_model(
    context: ServingContext,
    name: str,
    version: str,
    manifest: Manifest,
    processor: Processor,
    backend: Backend,
) -> ManifestModel:
    """A manifest model around a loaded backend, with its batcher, warmed up."""
    plan = BatchingPlan.from_settings(context.settings, manifest.batching.max_batch_size)
    model = ManifestModel(
        name,
        version,
        manifest,
        processor,
        backend,
        build_batcher(context, name, version, backend, plan),
        context.metrics.inflight.labels(name, version),
    )
    await started(model)
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
