"""The served-model interface: everything the data plane asks of a loaded model version,
whatever kind it is."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.errors import InvalidInput, ModelNotReady, NotFound

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

    from service.inference import (
        Call,
        Decoder,
        InferenceResult,
        PredictionsBody,
        RawReader,
        WireT,
    )
    from service.native.frames import HandlerResponse


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """A version's half of the Open Inference Protocol's model metadata (the data plane adds
    the name and the versions)."""

    platform: str
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    parameters: dict[str, Any] | None = None
    """None for a version that is not loaded: its metadata has no `parameters` at all."""

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "platform": self.platform,
            "inputs": self.inputs,
            "outputs": self.outputs,
        }
        if self.parameters is not None:
            body["parameters"] = self.parameters
        return body


@dataclass(frozen=True, slots=True)
class Workers:
    """The processes computing a version, as TorchServe's management API describes them."""

    pids: tuple[int, ...]
    target: int
    batch_size: int
    max_batch_delay_ms: int


class ServedModel(ABC):
    """One loaded, warmed-up model version.

    Each way in has a default that refuses with a clear error, so a kind implements only the
    ways it serves: a tensor model serves `infer` (and `predict` through its processor), an
    archive serves `handle` (and `infer` when it declares tensors).
    """

    name: str
    version: str

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version

    @property
    @abstractmethod
    def description(self) -> str:
        """One line for the logs: the backend and how it computes."""

    @abstractmethod
    def metadata(self) -> ModelMetadata: ...

    @abstractmethod
    def config(self) -> ModelConfig:
        """The model's configuration in Triton's terms (`ModelConfig`), completed: what
        Triton's clients read before building their requests."""

    async def healthy(self) -> bool:
        """Whatever computes this model still can (a remote backend, live workers)."""
        return True

    async def infer(self, decode: Decoder[WireT], call: Call) -> InferenceResult[WireT]:
        """Tensors in, tensors out (V2 REST, gRPC, KServe V1)."""
        raise InvalidInput(f"model {self.name!r} does not take tensors")

    async def handle(self, read: RawReader, call: Call) -> HandlerResponse:
        """A TorchServe request as it came, answered by the model's own handler."""
        raise InvalidInput(f"model {self.name!r} is not served by a TorchServe handler")

    async def predict(self, body: PredictionsBody, call: Call) -> HandlerResponse:
        """TorchServe's `/predictions`: by default, the tensor way in through the processor."""
        return body.answer(await self.infer(body.decode, call))

    def workers(self) -> Workers:
        return Workers(pids=(), target=0, batch_size=0, max_batch_delay_ms=0)

    async def scale(self, workers: int) -> None:
        raise NotFound(f"model {self.name!r} has no handler workers")

    @abstractmethod
    async def close(self) -> None:
        """Drain what is queued, then release what computes."""


class NoModel(ServedModel):
    """The model of a version that is loading or failed to load: refuses every request.
    (The repository refuses them first, with the version's state and reason.)"""

    @property
    def description(self) -> str:
        return "not loaded"

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(platform="")

    def config(self) -> ModelConfig:
        raise ModelNotReady(f"model {self.name!r} version {self.version} is not loaded")

    async def healthy(self) -> bool:
        return False

    async def infer(self, decode: Decoder[WireT], call: Call) -> InferenceResult[WireT]:
        raise ModelNotReady(f"model {self.name!r} version {self.version} is not loaded")

    async def handle(self, read: RawReader, call: Call) -> HandlerResponse:
        raise ModelNotReady(f"model {self.name!r} version {self.version} is not loaded")

    async def close(self) -> None:
        return None
