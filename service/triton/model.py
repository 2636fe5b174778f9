"""A model of a Triton model repository (or a bare model file), served as a tensor model:
the completed configuration decides its tensors, batching, instances and warm-up."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import Gauge
from tritonclient.grpc.model_config_pb2 import ModelConfig

from service.backends.base import Backend
from service.batcher import Queue
from service.datatypes import numpy_dtype
from service.feeds import Feed
from service.manifest import TensorSpec
from service.models.served import ModelMetadata
from service.models.tensor import TensorModel
from service.triton.processor import TritonProcessor
from service.triton.resolve import ResolvedModel
from service.triton.view import InputView, OutputView, ServingConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TritonSignature:
    """What the backends need of a Triton model: the tensors as the model itself takes and
    returns them (`reshape` applied, the batch dimension first when it batches)."""

    name: str
    version: str
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)

    @classmethod
    def of(cls, serving: ServingConfig, version: str) -> TritonSignature:
        def spec(view: InputView | OutputView) -> TensorSpec:
            shape = list(view.model_shape(serving.batching))
            return TensorSpec.model_construct(name=view.name, datatype=view.datatype, shape=shape)

        inputs = [spec(view) for view in serving.inputs]
        outputs = [spec(view) for view in serving.outputs]
        sequence = serving.sequence_batching
        if sequence is not None:
            # The tensors the server fills in and carries: control inputs ([batch, 1]) and
            # the implicit state, in and out.
            batch = [-1] if serving.batching else []
            inputs += [
                TensorSpec.model_construct(name=c.name, datatype=c.datatype, shape=[*batch, 1])
                for c in sequence.controls
            ]
            listed = {view.name for view in serving.outputs}
            for state in sequence.states:
                shape = [*batch, *state.dims]
                inputs.append(
                    TensorSpec.model_construct(
                        name=state.input_name, datatype=state.datatype, shape=shape
                    )
                )
                if state.output_name not in listed:
                    outputs.append(
                        TensorSpec.model_construct(
                            name=state.output_name, datatype=state.datatype, shape=shape
                        )
                    )
        return cls(serving.name, version, inputs, outputs)


class TritonModel(TensorModel):
    processor: TritonProcessor

    def __init__(
        self,
        resolved: ResolvedModel,
        version: str,
        processor: TritonProcessor,
        backend: Backend,
        batcher: Queue[Any, Feed],
        inflight: Gauge,
    ) -> None:
        super().__init__(resolved.name, version, processor, backend, batcher, inflight)
        self.resolved = resolved
        self.serving = resolved.serving

    def metadata(self) -> ModelMetadata:
        batch = [-1] if self.serving.batching else []

        def tensor(view: InputView | OutputView) -> dict[str, object]:
            return {"name": view.name, "datatype": view.datatype, "shape": [*batch, *view.dims]}

        return ModelMetadata(
            platform=self.serving.platform,
            inputs=[tensor(view) for view in self.serving.inputs],
            outputs=[tensor(view) for view in self.serving.outputs],
        )

    def config(self) -> ModelConfig:
        config = ModelConfig()
        config.CopyFrom(self.resolved.config)
        return config

    def batcher_rows(self, feed: Feed) -> int:
        if not self.serving.batching:
            return 1
        return super().batcher_rows(feed)

    @property
    def batched(self) -> bool:
        return self.serving.batching

    def priority_level(self, requested: int) -> int:
        """`dynamic_batching.priority_levels`: 1 is the highest; a request without a level, or
        with one out of range, gets `default_priority_level` (Triton's rule)."""
        batching = self.serving.dynamic_batching
        if batching is None or not batching.priority_levels:
            return 0
        if 1 <= requested <= batching.priority_levels:
            return requested
        return batching.default_priority_level or batching.priority_levels

    def timeout_ms(self, requested_ms: float | None) -> float | None:
        """`dynamic_batching.default_queue_policy`: with a default timeout and REJECT, a request
        waits at most that long (504 after); `allow_timeout_override` lets a request ask for
        less, never more. DELAY does not reject, so it sets no deadline here."""
        batching = self.serving.dynamic_batching
        policy = batching.default_queue_policy if batching is not None else None
        if policy is None or not policy.default_timeout_microseconds:
            return requested_ms
        if policy.timeout_action != "REJECT":
            return requested_ms
        default_ms = policy.default_timeout_microseconds / 1000.0
        if policy.allow_timeout_override and requested_ms is not None:
            return min(requested_ms, default_ms)
        return default_ms

    def answer(self, outputs: Feed) -> Feed:
        return self.processor.outputs(outputs)

    def labels_of(self, output: str) -> Sequence[str] | None:
        for view in self.serving.outputs:
            if view.name == output and view.labels:
                return view.labels
        return None

    def warmup_feeds(self) -> list[Feed]:
        """The configuration's `model_warmup` samples (zero or random data; files are not
        read yet), else one request of one row of zeros."""
        feeds = []
        for sample in self.serving.warmup:
            rows = max(1, sample.batch_size) if self.serving.batching else 0
            feed = {
                item.name: _sample(item.datatype, item.dims, rows, item.source == "random_data")
                for item in sample.inputs
            }
            feeds += [self._as_model_takes(feed)] * max(1, sample.count)
        if feeds:
            return feeds
        rows = 1 if self.serving.batching else 0
        zeros = {
            view.name: _sample(view.datatype, view.dims, rows, False)
            for view in self.serving.inputs
            if not view.optional
        }
        return [self._as_model_takes(zeros)]

    def _as_model_takes(self, feed: Feed) -> Feed:
        views = {view.name: view for view in self.serving.inputs}
        shaped: Feed = {}
        for name, array in feed.items():
            view = views[name]
            if view.reshape is not None:
                rows = (array.shape[0],) if self.serving.batching else ()
                array = array.reshape((*rows, *view.reshape))
            if view.datatype == "BYTES" and self.serving.runtime == "onnxruntime":
                array = array.astype(str).astype(object)
            shaped[name] = array
        return shaped


def _sample(datatype: str, dims: tuple[int, ...], rows: int, random: bool) -> np.ndarray:
    shape = ((rows,) if rows else ()) + tuple(1 if d == -1 else d for d in dims)
    if datatype == "BYTES":
        data = np.empty(shape, dtype=object)
        data.fill(b"")
        return data
    dtype = numpy_dtype(datatype).newbyteorder("=")
    if random:
        generator = np.random.default_rng(0)
        return generator.random(shape).astype(dtype)
    return np.zeros(shape, dtype=dtype)
