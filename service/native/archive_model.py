"""A TorchServe archive served natively: its handler in a pool of worker processes, reached
the raw TorchServe way (`/predictions`), and, for archives that declare tensors (our
`model.json`), the tensor way too (V2, gRPC, V1).

The raw way batches client requests as they are (body, headers, content type) and hands the
batch to a worker exactly as TorchServe's front end would; the handler's per-request statuses
come back. The tensor way sends one pre-batched safetensors request per gateway batch
(`service.backends.native_handler`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from prometheus_client import Gauge

from service.batcher import DynamicBatcher
from service.errors import BackendError, InvalidInput
from service.inference import Call, Decoder, InferenceResult, PredictionsBody, RawReader, WireT
from service.models.served import ModelMetadata, ServedModel, Workers
from service.models.tensor import ManifestModel
from service.native.aliases import TorchServeAliases
from service.native.archives import ExtractedArchive, ServingOptions
from service.native.frames import HandlerRequest, HandlerResponse
from service.native.handler_pool import HandlerPool, batch_failure

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

PLATFORM = "torchserve-native"


class ArchiveModel(ServedModel):
    """An archive's raw way in: the batcher of client requests and the handler pool."""

    def __init__(
        self,
        name: str,
        version: str,
        archive: ExtractedArchive,
        options: ServingOptions,
        pool: HandlerPool,
        batcher: DynamicBatcher[HandlerRequest, HandlerResponse],
        inflight: Gauge,
        aliases: TorchServeAliases,
    ) -> None:
        super().__init__(name, version)
        self.archive = archive
        self.options = options
        self.pool = pool
        self.batcher = batcher
        self.inflight = inflight
        self.aliases = aliases

    @property
    def description(self) -> str:
        return f"{PLATFORM}[{self.archive.manifest.handler}, {self.pool.target} worker(s)]"

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(
            platform=PLATFORM,
            parameters={
                "handler": self.archive.manifest.handler,
                "max_batch_size": self.options.batch_size,
            },
        )

    def config(self) -> ModelConfig:
        """What Triton's clients can know of a handler: its name and batch size; its inputs
        and outputs are the handler's own business."""
        from tritonclient.grpc.model_config_pb2 import ModelConfig

        config = ModelConfig(name=self.name, platform=PLATFORM, backend="python")
        config.max_batch_size = self.options.batch_size
        config.parameters["handler"].string_value = self.archive.manifest.handler
        return config

    async def healthy(self) -> bool:
        return self.pool.ready

    async def infer(self, decode: Decoder[WireT], call: Call) -> InferenceResult[WireT]:
        raise InvalidInput(
            f"model {self.name!r} is a TorchServe archive without tensor declarations "
            f"(no model.json): call /predictions/{self.name}"
        )

    async def handle(self, read: RawReader, call: Call) -> HandlerResponse:
        request = await read()
        call.rows = 1
        started = time.perf_counter()
        try:
            answer = await call.submit(self.batcher, self.inflight, request, call.deadline())
        finally:
            self.aliases.request_done(self.name, self.version, time.perf_counter() - started)
        call.code = answer.status
        if answer.status >= 400:
            call.failure = answer.reason or f"handler answered {answer.status}"
        return answer

    async def predict(self, body: PredictionsBody, call: Call) -> HandlerResponse:
        """TorchServe's own route goes to the archive's own handler."""
        return await self.handle(body.read, call)

    def workers(self) -> Workers:
        return Workers(
            pids=tuple(self.pool.pids()),
            target=self.pool.target,
            batch_size=self.options.batch_size,
            max_batch_delay_ms=self.options.max_batch_delay_ms,
        )

    async def scale(self, workers: int) -> None:
        await self.pool.scale(workers)
        self.batcher.resize(max(1, workers))

    async def close(self) -> None:
        await self.batcher.close()
        await self.pool.close()


class TensorArchiveModel(ArchiveModel):
    """An archive that ships our `model.json`: the tensor way in too, computed by the same
    handler pool (the tensor model's backend)."""

    def __init__(self, raw: ArchiveModel, tensors: ManifestModel) -> None:
        super().__init__(
            raw.name,
            raw.version,
            raw.archive,
            raw.options,
            raw.pool,
            raw.batcher,
            raw.inflight,
            raw.aliases,
        )
        self.tensors = tensors

    def metadata(self) -> ModelMetadata:
        return self.tensors.metadata()

    def config(self) -> ModelConfig:
        return self.tensors.config()

    async def infer(self, decode: Decoder[WireT], call: Call) -> InferenceResult[WireT]:
        return await self.tensors.infer(decode, call)

    async def close(self) -> None:
        await self.tensors.batcher.close()
        await super().close()


def handler_batch_function(
    pool: HandlerPool,
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
