"""The gRPC server: `grpc.aio` on its own port, beside uvicorn in the same event loop.

It serves `inference.GRPCInferenceService`, `grpc.health.v1.Health` (what Kubernetes' gRPC
probes call; SERVING exactly while the HTTP readiness route answers 200) and server reflection
(so `grpcurl` needs no `.proto`). Message size limits come from the settings: a larger message
is refused with RESOURCE_EXHAUSTED by gRPC itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service.dataplane import DataPlane
from service.grpc.admission import Admission
from service.grpc.request_scan import RequestScanner, ScannedInferRequests
from service.grpc.servicer import InferenceServicer

log = logging.getLogger(__name__)

INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
WATCH_INTERVAL_S = 0.5
"""How often a Watch stream re-reads readiness (readiness has no change events)."""


KEEPALIVE_TIMEOUT_MS = 20_000
"""How long the answer to a keepalive ping may take before the connection is closed."""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class ReadinessHealth(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Health derived from the data plane's readiness, for "" and the inference service."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def _status(self, service: str) -> int:
        if service not in ("", INFERENCE_SERVICE):
            return -1
        ready = self.plane.ready
        status: int = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return status

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._status(request.service)
        if status < 0:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last = None
        while True:
            status = self._status(request.service)
            if status < 0:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            await asyncio.sleep(WATCH_INTERVAL_S)


class _Activity(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Notes when the newest call arrived, for the drain's "have requests stopped?" check."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        self.last = time.monotonic()
        return await continuation(handler_call_details)


class GrpcServer:
    """The gRPC server, and the drain's view of it (`service.drain.Listener`).

    While the gateway drains, calls are still answered (UNAVAILABLE from the data plane, health
    NOT_SERVING) until the drain closes the listeners; `stop_accepting` then refuses new calls
    and lets running ones finish, and `wait_finished` waits for that.
    """

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._activity = _Activity()
        settings = plane.settings
        refused = plane.metrics.grpc_refused
        self.admission = Admission(
            settings.grpc_max_concurrent_calls,
            pushback_ms=settings.grpc_retry_pushback_ms,
            refused=lambda method: refused.labels(method).inc(),
            ended=plane.allocator.note,
            exempt=frozenset({HEALTH_SERVICE}),
        )
        scanner = RequestScanner(
            settings.input_limits, settings.grpc_max_request_fields, plane.allocator.note_bytes
        )
        self._scanned = ScannedInferRequests(
            scanner,
            frozenset(
                f"/{INFERENCE_SERVICE}/{name}" for name in ("ModelInfer", "ModelStreamInfer")
            ),
        )
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind `host:grpc_port` and start serving; returns the bound port."""
        settings = self.plane.settings
        limit = settings.grpc_max_message_bytes
        server = grpc.aio.server(
            # In this order: a call refused by admission is never parsed, nor scanned.
            interceptors=[self._activity, self.admission, self._scanned],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # One process owns the port: a second gateway on it must fail, not share it;
                # workers share it (service.supervisor reserves it against other gateways).
                ("grpc.so_reuseport", int(settings.workers > 1)),
                # Connections that never speak, idle ones, and peers that vanished.
                ("grpc.server_handshake_timeout_ms", _ms(settings.grpc_handshake_timeout_s)),
                ("grpc.max_connection_idle_ms", _ms(settings.grpc_max_connection_idle_s)),
                ("grpc.keepalive_time_ms", _ms(settings.grpc_keepalive_s)),
                ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
                # Calls that arrived but wait for the event loop to pick them up: one bound,
                # no random early drop below it (see service.grpc.admission).
                ("grpc.server.max_pending_requests", settings.grpc_max_pending_calls),
                ("grpc.server.max_pending_requests_hard_limit", settings.grpc_max_pending_calls),
            ],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.plane), server)
        health_pb2_grpc.add_HealthServicer_to_server(ReadinessHealth(self.plane), server)
        reflection.enable_server_reflection(
            (INFERENCE_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server
        )
        address = f"{settings.host}:{settings.grpc_port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as error:
            raise OSError(f"cannot bind gRPC on {address}: {error}") from None
        await server.start()
        self._server = server
        log.info("gRPC listening on %s:%d", settings.host, self.port)
        return self.port

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls (UNAVAILABLE) and give running ones `grace_s` to finish."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None

    # -- service.drain.Listener -----------------------------------------------------------------

    def begin_drain(self) -> None:
        """Nothing to flip: health and every call read the data plane's readiness."""

    def last_activity(self) -> float:
        return self._activity.last

    async def stop_accepting(self) -> None:
        if self._server is not None and self._stopping is None:
            grace = max(self.plane.settings.drain_seconds, 1.0)
            self._stopping = asyncio.create_task(self._server.stop(grace))

    async def wait_finished(self, timeout_s: float) -> bool:
        if self._stopping is None:
            return True
        done, _pending = await asyncio.wait({self._stopping}, timeout=timeout_s)
        return bool(done)
