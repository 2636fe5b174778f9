"""Runs the gateway under uvicorn with a graceful drain on SIGTERM/SIGINT.

On the first signal readiness turns 503 at once, new inference requests get 503 and every
answer carries `Connection: close`; the drain (`service.drain`) waits for queued and in-flight
work, keeps answering until new requests stop arriving (at most `drain_seconds` in all), closes
the listener without resetting connections the kernel already established, and gives those a
short grace to be answered; then uvicorn stops. A second signal stops at once.

The gRPC server (`service.grpc.server`) runs in the same event loop and joins the same drain
as a second listener. Under `GATEWAY_WORKERS` > 1 each worker process runs this whole server
(`service.supervisor`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
from collections.abc import Callable
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.app import create_app, drain
from service.connections import BoundedHttpToolsProtocol
from service.control import RepositoryControl
from service.dataplane import DataPlane
from service.drain import Listener, drain_listeners
from service.ports import reuse_port_socket
from service.repository import ModelRepository
from service.settings import Settings

log = logging.getLogger(__name__)

QUIET_SECONDS = 0.5
"""Close the listeners once no request arrived for this long (still within the drain time)."""
CLOSE_GRACE_SECONDS = 1.0
"""After the listeners close, how long accepted connections get to send and be answered."""
CONNECTION_CLOSE = (b"connection", b"close")
GC_YOUNG_THRESHOLD = 20_000
"""Allocations (net of frees) of tracked objects between two youngest-generation collections;
CPython's default is 700."""
WORKER_HEADER = "Gateway-Worker"
"""Names the worker process (its pid) on every HTTP answer, under `GATEWAY_WORKERS` > 1."""


def settle_gc() -> None:
    """Once the models are loaded: collect, move every object left (modules, models, sessions)
    out of the collector's sight (`gc.freeze`), and collect the youngest generation less often.

    Profiled in-process on the tiny tabular model (V2 JSON, 32 requests in flight), the cyclic
    collector took ~10-15 µs of each ~70 µs request: full collections walked the whole
    start-up heap every ~5,000 requests, and the youngest generation was collected every ~35
    requests although a request's objects are freed by reference counting (with a threshold of
    20,000 none ran in 16,000 requests). Objects frozen here are never collected as cycles: a
    start-up model unloaded later keeps what its own reference cycles hold.
    """
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


class UvicornListener:
    """The drain's view of a uvicorn server (`service.drain.Listener`)."""

    def __init__(self, server: uvicorn.Server) -> None:
        self.server = server
        self._seen_total = 0
        self._seen_at = time.monotonic()

    def close_after_each_answer(self) -> None:
        """Make every answer from now on its connection's last.

        uvicorn prepends `default_headers` to each response it starts and closes the connection
        after one that says `Connection: close` (`DrainingServer.on_tick` puts it back each time
        uvicorn rebuilds the list); requests already parsed captured the old list, so they are
        marked one by one. Only assignments, so safe in the signal handler — which must do it:
        a request parsed before the signal may be answered before the loop runs anything else.

        An answer whose headers are already sent keeps its connection: its client was told
        keep-alive and may send the next request on it the moment the body arrives; closing
        after that body reset such a request unanswered (a readiness probe, in
        `test_sigterm_drains_in_flight_requests`, 1 run in 10 under load). That next request
        gets the 503 and the `Connection: close`.
        """
        state = self.server.server_state
        if CONNECTION_CLOSE not in state.default_headers:
            state.default_headers = [*state.default_headers, CONNECTION_CLOSE]
        for connection in list(state.connections):
            cycle = getattr(connection, "cycle", None)
            if cycle is not None and not cycle.response_started:
                cycle.keep_alive = False

    def begin_drain(self) -> None:
        self.close_after_each_answer()
        state = self.server.server_state
        self._seen_total, self._seen_at = state.total_requests, time.monotonic()

    def last_activity(self) -> float:
        state = self.server.server_state
        if state.tasks or state.total_requests != self._seen_total:
            self._seen_total, self._seen_at = state.total_requests, time.monotonic()
        return self._seen_at

    async def stop_accepting(self) -> None:
        """Close the listening sockets without resetting their accept backlog.

        Closing a listening socket resets every connection the kernel completed but nobody
        accepted yet; their clients' connect() had succeeded, so each is a request lost. So:
        keep a duplicate of each socket's descriptor (the socket stays in LISTEN), stop the
        event loop's accepting, accept what is queued until the queue is empty, and close the
        duplicate in the same step, with no await between the last accept and the close.
        """
        loop = asyncio.get_running_loop()
        accepted: list[socket.socket] = []
        for server in getattr(self.server, "servers", []):
            duplicates = [
                socket.socket(fileno=os.dup(sock.fileno())) for sock in server.sockets or []
            ]
            server.close()
            for listening in duplicates:
                listening.setblocking(False)
                while True:
                    try:
                        connection, _ = listening.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except ConnectionAbortedError:
                        continue
                    accepted.append(connection)
                listening.close()
        if accepted:
            log.info("listener closed; answering %d connections from its backlog", len(accepted))
        await asyncio.gather(
            *(loop.connect_accepted_socket(self._protocol, connection) for connection in accepted)
        )

    def _protocol(self) -> asyncio.Protocol:
        config = self.server.config
        protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
            config=config,
            server_state=self.server.server_state,
            app_state=self.server.lifespan.state,
        )
        return protocol

    async def wait_finished(self, timeout_s: float) -> bool:
        # uvicorn offers no event for "last connection closed"; it polls too (every 0.1 s).
        state = self.server.server_state
        deadline = time.monotonic() + timeout_s
        while state.connections or state.tasks:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True


class DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        plane: DataPlane,
        drain_seconds: float,
        *,
        quiet_seconds: float = QUIET_SECONDS,
        close_grace_seconds: float = CLOSE_GRACE_SECONDS,
    ) -> None:
        super().__init__(config)
        self.plane = plane
        self.drain_seconds = drain_seconds
        self.quiet_seconds = quiet_seconds
        self.close_grace_seconds = close_grace_seconds
        self.http = UvicornListener(self)
        self.listeners: list[Listener] = [self.http]
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gc_settled = False

    def add_listener(self, listener: Listener) -> None:
        """Drain another server (e.g. gRPC) with this one, from the same signal."""
        self.listeners.append(listener)

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        grpc_server = None
        if self.plane.settings.grpc_enabled:
            from service.grpc.server import GrpcServer

            # Listening before the models load, as HTTP does: health answers NOT_SERVING.
            grpc_server = GrpcServer(self.plane)
            await grpc_server.start()
            self.add_listener(grpc_server)
        try:
            await super().serve(sockets)  # type: ignore[arg-type]
        finally:
            if grpc_server is not None:
                await grpc_server.stop(0)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or self._loop is None:
            super().handle_exit(sig, frame)
            return
        # Runs in the main thread between bytecodes: flip readiness now, drain on the loop.
        self.plane.draining = True
        self.http.close_after_each_answer()
        log.info("signal %d: draining for up to %.1f s", sig, self.drain_seconds)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain_task is None:
            for listener in self.listeners:
                listener.begin_drain()
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def on_tick(self, counter: int) -> bool:
        should_exit = await super().on_tick(counter)
        if self.plane.draining:
            self.http.close_after_each_answer()
        elif self.plane.started and not self._gc_settled:
            self._gc_settled = True
            settle_gc()
        return should_exit

    async def _drain(self) -> None:
        outcome = await drain_listeners(
            self.listeners,
            lambda timeout_s: drain(self.plane, timeout_s),
            drain_s=self.drain_seconds,
            quiet_s=self.quiet_seconds,
            close_grace_s=self.close_grace_seconds,
        )
        log.info(
            "drain %s after %.1f s (%s); stopping",
            "complete" if outcome.idle and outcome.finished else "timed out",
            outcome.seconds,
            "requests had stopped" if outcome.quiet else "requests still arriving",
        )
        self.should_exit = True


ControlFactory = Callable[[ModelRepository], RepositoryControl]


def run(settings: Settings, control: ControlFactory | None = None) -> None:
    """Serve until a signal. A worker of `service.supervisor` passes its `control` and binds its
    own SO_REUSEPORT sockets; each of its answers names it (`Gateway-Worker: <pid>`)."""
    app: FastAPI = create_app(settings)
    plane: DataPlane = app.state.dataplane
    sockets: list[socket.socket] | None = None
    headers: list[tuple[str, str]] = []
    if control is not None:
        plane.control = control(plane.repository)
        sockets = [reuse_port_socket(settings.host, settings.port)]
        # Among uvicorn's default headers: no per-request cost.
        headers = [(WORKER_HEADER, str(os.getpid()))]
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # httptools, with bounds on the time, size and number of request headers and on the
        # time of request bodies.
        http=BoundedHttpToolsProtocol.with_limits(
            header_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
        ),
        lifespan="on",
        access_log=False,
        # Client addresses are never used (no access log), so skip rewriting them per request.
        proxy_headers=False,
        log_config=None,
        # The drain has already waited `drain_seconds` for in-flight work; this bounds what
        # uvicorn's own shutdown waits after it for anything still unanswered.
        timeout_graceful_shutdown=max(1, round(CLOSE_GRACE_SECONDS)),
        timeout_keep_alive=settings.http_keep_alive_s,
        headers=headers,
    )
    DrainingServer(config, plane, settings.drain_seconds).run(sockets)
