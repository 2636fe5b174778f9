"""A Triton model with `sequence_batching`: a stateful model whose requests belong to
sequences, served through a `SequenceBatcher` instead of the dynamic batcher.

Beside the client's inputs, each step's feed holds what Triton's sequence batcher gives the
model: the control tensors (`START`, `END`, `READY`, `CORRID`, each `[batch, 1]`, or `[1]`
without batching) and the implicit state (the previous step's output state, zeros at the
start). Every row the gateway sends is a real step, so `READY` is always true: there is no
padding row to mark. The state outputs go back to the client only when the configuration
lists them in `output` (Triton's rule for debugging them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import Gauge

from service.backends.base import Backend
from service.compute import BatchRunner, InlinePolicy
from service.datatypes import numpy_dtype
from service.errors import InvalidInput
from service.feeds import Feed, rows_of
from service.inference import Call, Decoder, InferenceResult, WireT
from service.models.classification import classify
from service.models.tensor import ServingContext
from service.sequences import SequenceBatcher, SequenceId, SequenceParameters, SequenceStep
from service.triton.model import TritonModel
from service.triton.processor import TritonProcessor
from service.triton.resolve import ResolvedModel
from service.triton.view import SequenceBatching, ServingConfig


class TritonStepFeeds:
    """The `StepFeeds` of a Triton configuration's `sequence_batching`."""

    def __init__(self, serving: ServingConfig) -> None:
        assert serving.sequence_batching is not None
        self.sequence: SequenceBatching = serving.sequence_batching
        self.batching = serving.batching
        self._text = serving.runtime == "onnxruntime"
        listed = {view.name for view in serving.outputs}
        self._hidden_outputs = set(self.sequence.state_outputs) - listed

    def check(self, parameters: SequenceParameters) -> None:
        """Refuse an id the model's CORRID tensor cannot hold, before it is queued."""
        for control in self.sequence.controls:
            if control.kind != "CORRID":
                continue
            if control.datatype == "BYTES":
                continue
            if not isinstance(parameters.id, int):
                raise InvalidInput(
                    f"sequence_id {parameters.id!r}: this model's correlation id is "
                    f"{control.datatype}; send an unsigned integer"
                )
            info = np.iinfo(numpy_dtype(control.datatype).type)  # type: ignore[type-var]
            if not info.min <= parameters.id <= info.max:
                raise InvalidInput(
                    f"sequence_id {parameters.id}: does not fit this model's {control.datatype} "
                    "correlation id"
                )

    def initial_state(self) -> Feed:
        rows = (1,) if self.batching else ()
        return {
            state.input_name: np.zeros(
                (*rows, *state.initial_dims), dtype=numpy_dtype(state.datatype).newbyteorder("=")
            )
            for state in self.sequence.states
        }

    def feed(
        self, inputs: Feed, state: Feed, *, start: bool, end: bool, sequence: SequenceId
    ) -> Feed:
        rows = rows_of(inputs) if self.batching and inputs else 1
        shape = (rows, 1) if self.batching else (1,)
        feed = dict(inputs)
        for control in self.sequence.controls:
            value: Any
            if control.kind == "CORRID":
                value = str(sequence) if control.datatype == "BYTES" else sequence
            else:
                flag = {"START": start, "END": end, "READY": True}[control.kind]
                value = control.false_true[1 if flag else 0]
            if control.datatype == "BYTES":
                array = np.empty(shape, dtype=object)
                array.fill(value if self._text else str(value).encode())
            else:
                array = np.full(shape, value, dtype=numpy_dtype(control.datatype).newbyteorder("="))
            feed[control.name] = array
        for name, array in state.items():
            feed[name] = np.repeat(array, rows, axis=0) if self.batching and rows > 1 else array
        return feed

    def carry(self, outputs: Feed) -> tuple[Feed, Feed]:
        state = {state.input_name: outputs[state.output_name] for state in self.sequence.states}
        answer = {
            name: array for name, array in outputs.items() if name not in self._hidden_outputs
        }
        return answer, state


def build_sequence_batcher(
    context: ServingContext,
    serving: ServingConfig,
    version: str,
    backend: Backend,
    step_feeds: TritonStepFeeds,
) -> SequenceBatcher:
    """The sequence batcher of one version: its batches computed like the dynamic batcher's
    (`BatchRunner`: merge, run, split), its counts in the model's metrics."""
    sequence = step_feeds.sequence
    settings = context.settings
    observer = context.metrics.observer(serving.name, version)
    instances = max(
        1, sum(group.count * max(1, len(group.gpus)) for group in serving.instance_groups)
    )
    bound = settings.max_sequences
    if sequence.max_candidate_sequences:
        bound = min(bound, sequence.max_candidate_sequences)
    return SequenceBatcher(
        BatchRunner(
            backend,
            inline=InlinePolicy(settings.inline_batch_max_ms / 1000.0),
            observer=observer,
            batched=serving.batching,
        ),
        step_feeds,
        name=serving.name,
        strategy=sequence.strategy,
        max_batch_size=max(1, serving.max_batch_size),
        instances=instances,
        max_sequences=bound,
        idle_s=sequence.max_sequence_idle_microseconds / 1e6,
        max_queue_size=settings.max_queue_size,
        max_queue_delay_s=sequence.max_queue_delay_microseconds / 1e6,
        observer=observer,
        sequence_observer=context.metrics.sequence_observer(serving.name, version),
    )


class SequenceModel(TritonModel):
    """A Triton model served by sequences: every request names one (`sequence_id`)."""

    batcher: SequenceBatcher

    def __init__(
        self,
        resolved: ResolvedModel,
        version: str,
        processor: TritonProcessor,
        backend: Backend,
        batcher: SequenceBatcher,
        step_feeds: TritonStepFeeds,
        inflight: Gauge,
    ) -> None:
        super().__init__(resolved, version, processor, backend, batcher, inflight)
        self.step_feeds = step_feeds

    async def infer(self, decode: Decoder[WireT], call: Call) -> InferenceResult[WireT]:
        with call.stage("decode"):
            feed, body = await self._decode(decode)
        if body.sequence is None:
            raise InvalidInput(
                f"model {self.name!r} serves sequences: every request needs a sequence_id "
                "parameter (and sequence_start on the first of a sequence)"
            )
        self.step_feeds.check(body.sequence)
        call.rows = self.batcher_rows(feed)
        if call.rows != 1:
            raise InvalidInput(
                f"a request of a sequence holds one row (batch size 1); got {call.rows}"
            )
        outputs = await call.submit(
            self.batcher,
            self.inflight,
            SequenceStep(body.sequence, feed),
            call.deadline(self.timeout_ms(body.timeout_ms)),
        )
        outputs = self.answer(outputs)
        if body.classification:
            outputs = classify(outputs, body.classification, self.labels_of, batched=self.batched)
        return InferenceResult(self, outputs, body)

    def warmup_feeds(self) -> list[Feed]:
        """The stateless warm-up feeds, each as the first step of a sequence."""
        state = self.step_feeds.initial_state()
        return [
            self.step_feeds.feed(feed, state, start=True, end=True, sequence=_WARMUP_ID)
            for feed in super().warmup_feeds()
        ]


_WARMUP_ID = 1
