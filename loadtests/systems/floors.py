"""The floors as systems under test: the bare transports the gateway is built on, answering a
constant (`loadtests.systems.floor_server`), loaded with the same requests as the gateway's
V2 JSON and gRPC systems. Their CPU per request is what the gateway's is divided by."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

from loadtests.systems import procs
from loadtests.systems.deployment import Context, Deployment, ServerInfo
from loadtests.systems.targets import grpc_request, v2_requests

SYNC_THREADS = 8
FLOOR_SYSTEMS = ("floor-uvicorn", "floor-grpc-aio", "floor-grpc-sync", "floor-grpclib")
SETTINGS = {
    "floor-uvicorn": "uvicorn + httptools + uvloop, a bare ASGI app reading the body and "
    "answering one fixed V2 JSON response, access log off",
    "floor-grpc-aio": "grpc.aio server (asyncio loop), generated GRPCInferenceService "
    "servicer answering one fixed ModelInferResponse",
    "floor-grpc-sync": f"grpc.server with a {SYNC_THREADS}-thread pool, the same servicer "
    "and answer",
    "floor-grpclib": "grpclib (pure-Python HTTP/2 on asyncio), the same messages and answer",
}


def _wait_grpc(target: str, process: object, timeout_s: float) -> None:
    import grpc

    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise TimeoutError(f"gRPC {target} not accepting after {timeout_s:.0f} s") from None


def _start(
    ctx: Context, stack: ExitStack, system: str, extra: Sequence[str] = ()
) -> tuple[str, ServerInfo]:
    """One floor server on a free port inside `stack`; its base URL or gRPC target."""
    port = procs.free_port()
    kind = system.removeprefix("floor-")
    started = time.monotonic()
    process = procs.spawn(
        [sys.executable, "-m", "loadtests.systems.floor_server", kind, "--port", str(port), *extra],
        ctx.work_dir / f"{system}.log",
    )
    stack.callback(procs.stop, process, 5.0)
    if kind == "uvicorn":
        address = f"http://127.0.0.1:{port}"
        procs.wait_ready([f"{address}/"], process, ctx.startup_timeout_s)
    else:
        address = f"127.0.0.1:{port}"
        _wait_grpc(address, process, ctx.startup_timeout_s)
    info = ServerInfo(system, process.pid, time.monotonic() - started, SETTINGS[system])
    info.rss_ready_mb = procs.tree_rss_mb(process.pid)
    return address, info


@contextmanager
def floors(ctx: Context) -> Iterator[Deployment]:
    """The floors, each its own process (so each its own CPU)."""
    with ExitStack() as stack:
        http, http_info = _start(ctx, stack, "floor-uvicorn")
        grpc_floors = {
            system: _start(ctx, stack, system, extra)
            for system, extra in (
                ("floor-grpc-aio", ()),
                ("floor-grpc-sync", ("--threads", str(SYNC_THREADS))),
                ("floor-grpclib", ()),
            )
        }
        yield Deployment(
            servers=[http_info, *(info for _, info in grpc_floors.values())],
            targets={
                "floor-uvicorn": {m.name: v2_requests(http, m, binary=False) for m in ctx.models},
                **{
                    system: {m.name: grpc_request(target, m) for m in ctx.models}
                    for system, (target, _) in grpc_floors.items()
                },
            },
            processes={
                "floor-uvicorn": [http_info.pid],
                **{system: [info.pid] for system, (_, info) in grpc_floors.items()},
            },
        )
