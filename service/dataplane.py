"""The data plane: every protocol verb, the same for every transport.

Adapters (V2 REST, KServe V1, TorchServe's `/predictions` and management API, gRPC) decode,
call one method here and encode; none of them touches the repository. The verbs: live, ready,
server and model metadata, model readiness, infer, the repository's index, load, unload
and scale, and system shared memory's status, register and unregister. Each checks its own credentials.

`infer` owns every step of one request between the adapter's decode and encode: authorization,
one model lookup (before the body is read, so an unknown model is 404 whatever it holds), the
served model's way in, one deadline policy, leaving the queue when the client goes away, metric
labels, spans and the request log. No HTTP or gRPC type appears here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from service import __version__
from service.auth import check_token
from service.batcher import BatchTrace, current_trace
from service.control import LocalControl, RepositoryControl
from service.errors import (
    InvalidInput,
    ModelNotReady,
    NotFound,
    NotSupported,
    ServingError,
    ShuttingDown,
)
from service.inference import AnswerT, Call, InferenceRequest
from service.memory import AllocatorTrim
from service.metrics import GatewayMetrics
from service.models.served import Workers
from service.repository import IndexEntry as IndexEntry
from service.repository import ModelRepository, ModelVersion
from service.settings import Settings
from service.shared_memory import CUDA_UNSUPPORTED, RegionStatus, SharedMemory
from service.tracing import Tracing

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

ResponseT = TypeVar("ResponseT")
request_log = logging.getLogger("service.requests")
log = logging.getLogger(__name__)

CLIENT_GONE = 499
"""Status recorded for a request whose client went away (nginx's convention)."""
SERVER_NAME = "model-serving-gateway"
EXTENSIONS = (
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "parameters",
    "sequence",
    "statistics",
)
"""The Open Inference Protocol extensions this server implements."""


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ModelReadiness:
    name: str
    version: str
    ready: bool


@dataclass(frozen=True, slots=True)
class LoadOutcome:
    """What a load left: every version on disk with its state; `failure` names the versions
    that could not load and why ('' when all loaded)."""

    name: str
    versions: list[IndexEntry]

    @property
    def failure(self) -> str:
        return "; ".join(
            f"v{entry.version}: {entry.reason}" for entry in self.versions if entry.state != "READY"
        )


@dataclass(frozen=True, slots=True)
class ModelWorkers:
    """A version and its workers (TorchServe's describe)."""

    entry: IndexEntry
    workers: Workers


class DataPlane:
    def __init__(
        self,
        settings: Settings,
        repository: ModelRepository,
        metrics: GatewayMetrics,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.metrics = metrics
        self.tracing = tracing
        self.control: RepositoryControl = LocalControl(repository)
        """Where repository API calls go (every worker's repository under `GATEWAY_WORKERS`)."""
        self.shared_memory = SharedMemory(
            settings.shared_memory, settings.shared_memory_max_regions
        )
        """The system shared memory regions clients registered (the codecs read and write
        the slices requests name through it)."""
        self.allocator = AllocatorTrim()
        """Told each large request's size: gives the memory it freed back afterwards."""
        self.draining = False
        self.started = False
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def ready(self) -> bool:
        return self.started and not self.draining and self.control.degraded is None

    @property
    def active_requests(self) -> int:
        return self._active

    @property
    def traced(self) -> bool:
        """Whether adapters should pass on the caller's trace context."""
        return self.tracing is not None

    # -- policies ----------------------------------------------------------------------------

    def authorize_inference(self, token: str | None) -> None:
        check_token(token, self.settings.inference_token, self.settings.management_token)

    def authorize_management(self, token: str | None) -> None:
        if self.settings.management_token is None:
            raise NotFound(
                "the repository API is disabled (set GATEWAY_MANAGEMENT_TOKEN to enable it)"
            )
        check_token(token, self.settings.management_token, self.settings.inference_token)

    def authorize_probe(self, token: str | None) -> None:
        """Health and metrics: open, unless the settings protect them with the inference
        token."""
        if self.settings.protect_health_and_metrics:
            self.authorize_inference(token)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the models the gateway starts with; then it is ready."""
        await self.control.start()
        self.started = True
        states = {f"{m.name}/{m.version}": m.state.value for m in self.repository.all_versions()}
        log.info("gateway ready", extra={"models": states})

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new work, then wait for in-flight requests; True when all were answered."""
        self.draining = True
        return await self.wait_idle(timeout_s)

    async def close(self) -> None:
        await self.control.close()
        await self.repository.close()
        self.shared_memory.close()

    # -- health and metadata -------------------------------------------------------------------

    def live(self, credentials: str | None) -> bool:
        self.authorize_probe(credentials)
        return True

    def readiness(self, credentials: str | None) -> Readiness:
        self.authorize_probe(credentials)
        if self.ready:
            return Readiness(True)
        if self.draining:
            return Readiness(False, "shutting down")
        return Readiness(False, self.control.degraded or "loading models")

    def metrics_text(self, credentials: str | None, accept: str | None) -> tuple[bytes, str]:
        """The exposition (body, content type) the scraper's `Accept` asks for."""
        self.authorize_probe(credentials)
        return self.metrics.render(accept)

    def server_metadata(self, credentials: str | None) -> dict[str, Any]:
        self.authorize_inference(credentials)
        extensions = [*EXTENSIONS, *self.shared_memory.extensions]
        return {"name": SERVER_NAME, "version": __version__, "extensions": extensions}

    def model_metadata(
        self, name: str, version: str | None, credentials: str | None
    ) -> dict[str, Any]:
        """Name, versions, platform and tensors; a version that did not load has no tensors."""
        self.authorize_inference(credentials)
        entry = self._get(name, version)
        body: dict[str, Any] = {
            "name": entry.name,
            "versions": self.repository.version_names(name),
            **entry.model.metadata().as_dict(),
        }
        if "parameters" in body:
            body["parameters"]["state"] = entry.state.value
        return body

    def model_config(self, name: str, version: str | None, credentials: str | None) -> ModelConfig:
        """The completed configuration in Triton's terms (the model configuration extension)."""
        self.authorize_inference(credentials)
        return self._get(name, version).model.config()

    def statistics(
        self, name: str | None, version: str | None, credentials: str | None
    ) -> list[dict[str, Any]]:
        """Triton's statistics of one version, of every version of a model, or of every model
        (no name), in Triton's JSON form."""
        self.authorize_inference(credentials)
        if name:
            entries = [self.repository.get(name, version)] if version else self._versions(name)
        else:
            entries = [
                entry for model in self.repository.names() for entry in self._versions(model)
            ]
        return [
            self.metrics.statistics_of(entry.name, entry.version).as_triton()
            for entry in entries
            if entry.ready
        ]

    def model_ready(
        self, name: str, version: str | None, credentials: str | None
    ) -> ModelReadiness:
        self.authorize_inference(credentials)
        entry = self._get(name, version)
        return ModelReadiness(entry.name, entry.version, entry.ready)

    # -- inference -----------------------------------------------------------------------------

    async def infer(
        self,
        request: InferenceRequest[AnswerT],
        encode: Callable[[AnswerT], ResponseT],
    ) -> ResponseT:
        """Run `request` and return `encode(answer)`. Raises `ServingError` (after counting it)
        for the adapter's error boundary."""
        with self._served(request) as call:
            self.authorize_inference(request.credentials)
            if self.draining:
                raise ShuttingDown("server is shutting down")
            entry = self._get(request.model, request.version)
            call.labels = (entry.name, entry.version)
            model = entry.lease()
            try:
                answer = await request.body.run(model, call)
            finally:
                entry.release()
            if call.span is None:
                response = encode(answer)
            else:
                with call.stage("encode"):
                    response = encode(answer)
            if call.code is None:
                call.code = 200
            return response

    @contextlib.contextmanager
    def _served(self, request: InferenceRequest[Any]) -> Iterator[Call]:
        """Everything around one request, whatever its way through: the active count, the
        span, the metrics and the request log, with the status the body set or raised."""
        started = time.perf_counter()
        protocol, model = request.protocol, request.model
        span = (
            self.tracing.start_request(protocol, model, request.trace_context)
            if self.tracing is not None
            else None
        )
        if span is not None and not span.span.is_recording():
            span = None  # not sampled: no children, no batch span, no exemplar
        trace = BatchTrace() if self.settings.log_requests or span is not None else None
        if trace is not None:
            trace.span = span.span if span is not None else None
            current_trace.set(trace)
        call = Call(
            span,
            timeout_ms=request.timeout_ms,
            default_timeout_ms=self.settings.default_timeout_ms,
            disconnected=request.disconnected,
        )
        self._active += 1
        self._idle.clear()
        try:
            yield call
        except ServingError as error:
            call.code, call.failure = error.status_code, error.message
            raise
        except asyncio.CancelledError:
            call.code = CLIENT_GONE
            raise
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()
            seconds = time.perf_counter() - started
            code = call.code if call.code is not None else 500
            trace_id = span.trace_id if span is not None else None
            labels = call.labels
            # Only known models and versions become labels, so clients cannot grow the set.
            if labels is not None:
                self.metrics.observe_request(*labels, protocol, code, seconds, trace_id=trace_id)
            if span is not None and trace is not None:
                span.finish(
                    code=code, labels=labels, rows=call.rows, trace=trace, error=call.failure
                )
            if self.settings.log_requests and trace is not None:
                self._log(protocol, model, labels, code, seconds, trace, trace_id)

    def _log(
        self,
        protocol: str,
        model: str,
        labels: tuple[str, str] | None,
        code: int,
        seconds: float,
        trace: BatchTrace,
        trace_id: str | None,
    ) -> None:
        request_log.info(
            "request",
            extra={
                "trace_id": trace_id,
                "model": model,
                "version": labels[1] if labels else None,
                "protocol": protocol,
                "status": code,
                "ms": round(seconds * 1000, 3),
                "queue_ms": round(trace.queue_s * 1000, 3),
                "compute_ms": round(trace.compute_s * 1000, 3),
                "batch_rows": trace.batch_rows,
            },
        )

    # -- system shared memory (inference token) ------------------------------------------------

    def shared_memory_status(self, name: str | None, credentials: str | None) -> list[RegionStatus]:
        """Every registered region, or the one named."""
        self.authorize_inference(credentials)
        return self.shared_memory.status(name)

    def shared_memory_register(
        self, name: str, key: str, offset: Any, byte_size: Any, credentials: str | None
    ) -> None:
        self.authorize_inference(credentials)
        self.shared_memory.register(name, key, offset, byte_size)

    def shared_memory_unregister(self, name: str | None, credentials: str | None) -> None:
        """Unregister the region named, or every region."""
        self.authorize_inference(credentials)
        self.shared_memory.unregister(name)

    def cuda_shared_memory(self, credentials: str | None) -> NoReturn:
        """CUDA shared memory's status and register: not offered here."""
        self.authorize_inference(credentials)
        raise NotSupported(CUDA_UNSUPPORTED)

    def cuda_shared_memory_unregister(self, name: str | None, credentials: str | None) -> None:
        """Unregistering every CUDA region succeeds (none can exist; clients call it before
        they start); naming one is not supported."""
        self.authorize_inference(credentials)
        if name:
            raise NotSupported(CUDA_UNSUPPORTED)

    # -- the repository (management token) -----------------------------------------------------

    def repository_index(
        self, credentials: str | None, *, ready_only: bool = False
    ) -> list[IndexEntry]:
        self.authorize_management(credentials)
        entries = self.repository.index()
        if ready_only:
            entries = [entry for entry in entries if entry.state == "READY"]
        return entries

    def model_names(self, credentials: str | None) -> list[str]:
        """The models loaded (whatever their state)."""
        self.authorize_management(credentials)
        return self.repository.names()

    def model_workers(self, name: str, credentials: str | None) -> list[ModelWorkers]:
        self.authorize_management(credentials)
        return [
            ModelWorkers(IndexEntry.of(version), version.model.workers())
            for version in self._versions(name)
        ]

    async def load(self, name: str, credentials: str | None) -> LoadOutcome:
        """Load or reload `name` wherever this gateway serves (every worker)."""
        self.authorize_management(credentials)
        models = await self.control.load(name)
        return LoadOutcome(name, [IndexEntry.of(model) for model in models])

    async def register(
        self, name: str, workers: int | None, credentials: str | None
    ) -> ModelWorkers:
        """TorchServe's register: load a model not loaded yet, then scale it to `workers`.
        Answers the latest version and its workers."""
        self.authorize_management(credentials)
        if name in self.repository.names():
            raise InvalidInput(f"Model {name} is already registered.")
        outcome = await self.load(name, credentials)
        if outcome.failure:
            raise InvalidInput(f"{name} {outcome.failure}")
        if workers is not None:
            await self.scale(name, workers, credentials)
        latest = self.repository.get(name)
        return ModelWorkers(IndexEntry.of(latest), latest.model.workers())

    async def unload(self, name: str, credentials: str | None) -> None:
        self.authorize_management(credentials)
        await self.control.unload(name)

    async def scale(self, name: str, workers: int, credentials: str | None) -> None:
        """Set the worker count of every version of `name`."""
        self.authorize_management(credentials)
        if workers < 0:
            raise InvalidInput("min_worker must be a whole number >= 0")
        for version in self._versions(name):
            await version.model.scale(workers)

    def _get(self, name: str, version: str | None) -> ModelVersion:
        try:
            return self.repository.get(name, version)
        except NotFound as error:
            raise self._missing(name, error) from None

    def _versions(self, name: str) -> list[ModelVersion]:
        try:
            versions = self.repository.versions(name)
        except NotFound as error:
            raise self._missing(name, error) from None
        return [versions[v] for v in self.repository.version_names(name)]

    def _missing(self, name: str, error: NotFound) -> ServingError:
        """What a model not found is. Until the start-up models have loaded it may be one
        still on its way: 503, as readiness says, not 404 (with several workers one may
        serve while another still loads)."""
        if self.started:
            return error
        return ModelNotReady(
            f"model '{name}' is not available yet: the gateway is still loading its models"
        )

    # -- drain ---------------------------------------------------------------------------------

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no inference request is being handled; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
