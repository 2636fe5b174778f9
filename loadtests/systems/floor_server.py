"""The floors: the cheapest servers each of our transports can be, answering a constant.

    python -m loadtests.systems.floor_server uvicorn --port 8080
    python -m loadtests.systems.floor_server grpc-aio --port 8081
    python -m loadtests.systems.floor_server grpc-sync --port 8082 --threads 8
    python -m loadtests.systems.floor_server grpclib --port 8083

- `uvicorn`: uvicorn with httptools and uvloop (the gateway's HTTP stack) and a bare ASGI app
  that reads the whole body and answers one fixed V2 JSON response, access log off.
- `grpc-aio`: a `grpc.aio` server with the generated `GRPCInferenceService` servicer whose
  ModelInfer returns one fixed ModelInferResponse (the request is still parsed and the answer
  serialized by protobuf, as any servicer's are).
- `grpc-sync`: the same servicer on the thread-pool `grpc.server`.
- `grpclib`: grpclib, a pure-Python gRPC server on asyncio (HTTP/2 by `h2`), with the same
  messages and answer: the other gRPC server implementation for Python's asyncio.

The gateway's CPU per request divided by its floor's is what its own code costs on top of the
transport it is built on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from concurrent import futures
from typing import Any

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
ANSWER_FLOATS = 3
JSON_ANSWER = json.dumps(
    {
        "model_name": "floor",
        "model_version": "1",
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [1, 3], "data": [0.1, 0.2, 0.7]}
        ],
    },
    separators=(",", ":"),
).encode()
HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(JSON_ANSWER)).encode()),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


async def app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Reads the body, answers the constant."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": JSON_ANSWER})


def serve_uvicorn(port: int) -> None:
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        http="httptools",
        loop="uvloop",
        access_log=False,
        log_level="warning",
    )


def answer() -> Any:
    """One iris row's answer: one FP32 [1, 3] output as raw contents."""
    from tritonclient.grpc import service_pb2 as pb

    response = pb.ModelInferResponse(model_name="floor", model_version="1")
    output = response.outputs.add()
    output.name, output.datatype = "probabilities", "FP32"
    output.shape.extend([1, ANSWER_FLOATS])
    response.raw_output_contents.append(b"\0" * 4 * ANSWER_FLOATS)
    return response


OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def _servicer(asynchronous: bool, *, batched: bool = False) -> Any:
    """The fixed answer; `batched` (grpc.aio only): each call waits for a future that a
    separate task resolves, as every call waits for its batch in the gateway."""
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    fixed = answer()
    waiting: list[asyncio.Future[Any]] = []
    wakeup: asyncio.Event | None = None

    async def resolve() -> None:
        assert wakeup is not None
        while True:
            await wakeup.wait()
            wakeup.clear()
            ready, waiting[:] = list(waiting), []
            for future in ready:
                future.set_result(fixed)

    async def batched_answer() -> Any:
        nonlocal wakeup
        if wakeup is None:
            wakeup = asyncio.Event()
            asyncio.get_running_loop().create_task(resolve())
        future = asyncio.get_running_loop().create_future()
        waiting.append(future)
        wakeup.set()
        return await future

    class Sync(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        def ModelInfer(self, request: Any, context: Any) -> Any:
            return fixed

    class Async(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        async def ModelInfer(self, request: Any, context: Any) -> Any:
            return await batched_answer() if batched else fixed

    return Async() if asynchronous else Sync()


def _noting_interceptor() -> Any:
    """A server interceptor that only notes the time of each call, as the gateway's drain
    check did: what an interceptor alone costs per call."""
    import time

    import grpc

    class Noting(grpc.aio.ServerInterceptor):  # type: ignore[misc]
        last = 0.0

        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            self.last = time.monotonic()
            return await continuation(details)

    return Noting()


def _bridged_servicer() -> Any:
    """For the thread-pool server: each call hands a coroutine to an event loop running in
    another thread and waits for its answer, as a sync gRPC server in front of the gateway's
    asyncio data plane would have to."""
    import threading

    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    fixed = answer()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True, name="loop").start()

    async def infer() -> Any:
        return fixed

    class Bridged(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        def ModelInfer(self, request: Any, context: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(infer(), loop).result()

    return Bridged()


async def serve_grpc_aio(
    port: int,
    *,
    interceptor: bool = False,
    batched: bool = False,
    options: Sequence[tuple[str, Any]] = (),
) -> None:
    import grpc
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    server = grpc.aio.server(
        options=[*OPTIONS, *options],
        interceptors=[_noting_interceptor()] if interceptor else None,
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(_servicer(True, batched=batched), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def serve_grpc_sync(
    port: int, threads: int, *, bridged: bool = False, options: Sequence[tuple[str, Any]] = ()
) -> None:
    import grpc
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads), options=[*OPTIONS, *options]
    )
    servicer = _bridged_servicer() if bridged else _servicer(False)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


async def serve_grpclib(port: int) -> None:
    from grpclib.const import Cardinality, Handler
    from grpclib.server import Server, Stream
    from tritonclient.grpc import service_pb2 as pb

    fixed = answer()

    async def model_infer(stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_message(fixed)

    class Inference:
        """grpclib's service protocol: the handled method paths."""

        def __mapping__(self) -> dict[str, Handler]:
            return {
                "/inference.GRPCInferenceService/ModelInfer": Handler(
                    model_infer,
                    Cardinality.UNARY_UNARY,
                    pb.ModelInferRequest,
                    pb.ModelInferResponse,
                )
            }

    server = Server([Inference()])
    await server.start("127.0.0.1", port)
    await server.wait_closed()


KINDS = ("uvicorn", "grpc-aio", "grpc-sync", "grpclib")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtests.systems.floor_server")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8, help="grpc-sync's thread pool")
    parser.add_argument(
        "--uvloop", action="store_true", help="grpc-aio or grpclib on uvloop (the gateway's loop)"
    )
    parser.add_argument(
        "--interceptor", action="store_true", help="grpc-aio with a do-nothing interceptor"
    )
    parser.add_argument(
        "--batched",
        action="store_true",
        help="grpc-aio: each call waits for a future another task resolves (as for a batch)",
    )
    parser.add_argument(
        "--bridged",
        action="store_true",
        help="grpc-sync answering through an asyncio loop in another thread",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=INT",
        help="a gRPC channel argument for the server (repeatable)",
    )
    args = parser.parse_args(argv)
    options = [(name, int(value)) for name, _, value in (o.partition("=") for o in args.option)]
    aio = {"interceptor": args.interceptor, "batched": args.batched, "options": options}
    if args.kind == "uvicorn":
        serve_uvicorn(args.port)
    elif args.kind in ("grpc-aio", "grpclib"):
        serving = (
            serve_grpc_aio(args.port, **aio)
            if args.kind == "grpc-aio"
            else serve_grpclib(args.port)
        )
        if args.uvloop:
            import uvloop

            uvloop.run(serving)
        else:
            asyncio.run(serving)
    else:
        serve_grpc_sync(args.port, args.threads, bridged=args.bridged, options=options)


if __name__ == "__main__":
    main()
