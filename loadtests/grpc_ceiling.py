"""How fast `loadtests.grpc_load` can go here: its ceiling against a server that does nothing.

    python -m loadtests.grpc_ceiling --concurrency 1,32 --duration 3 --processes 1,2

Starts a server that answers every call with one fixed, pre-serialized ModelInferResponse (no
parsing, no model): grpc_gen's own C++ echo server (`--server cpp`, one thread, the default), or a
`grpc.aio` generic handler (`--server python`, as cheap as a Python gRPC server gets). Then runs the generator against it at each
concurrency with each generator (grpc_gen, C++; grpc.aio workers, Python) with 1 and 2
worker threads/processes and prints req/s, p50 and the generator's CPU per
call. On a machine whose cores the server shares, a benchmarked server can only be seen as long
as its rate stays well below this ceiling; docs/benchmarks.md records the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from loadtests.drive.grpc_load.cpp import BUILD_DIR, cpp_binary
from loadtests.drive.grpc_load.request import GrpcRequest
from loadtests.drive.grpc_load.runner import REPO, run
from loadtests.systems import procs

ANSWER_FLOATS = 3
ECHO_REQUEST = b"\n\x04echo"
"""A serialized ModelInferRequest(model_name="echo"): the server never reads it."""


def answer_bytes() -> bytes:
    """What a real server answers for one iris row: one FP32 [1, 3] raw output."""
    from tritonclient.grpc import service_pb2 as pb

    response = pb.ModelInferResponse(model_name="echo", model_version="1", id="")
    output = response.outputs.add()
    output.name, output.datatype = "probabilities", "FP32"
    output.shape.extend([1, ANSWER_FLOATS])
    response.raw_output_contents.append(b"\0" * 4 * ANSWER_FLOATS)
    return bytes(response.SerializeToString())


async def serve(port: int) -> None:
    import grpc

    answer = answer_bytes()

    async def infer(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return answer

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)},  # bytes in, bytes out
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()


def wait_port(target: str, timeout_s: float = 20.0) -> None:
    import grpc

    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)


@contextmanager
def echo_server(server: str, work_dir: Path) -> Iterator[str]:
    """A do-nothing ModelInfer server on a free port ("cpp" or "python"); yields its target."""
    port = procs.free_port()
    answer = work_dir / "echo-answer.bin"
    answer.parent.mkdir(parents=True, exist_ok=True)
    answer.write_bytes(answer_bytes())
    command = (
        [str(cpp_binary()), "--serve", str(port), str(answer)]
        if server == "cpp"
        else [sys.executable, "-m", "loadtests.grpc_ceiling", "--serve", str(port)]
    )
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    try:
        target = f"127.0.0.1:{port}"
        wait_port(target)
        yield target
    finally:
        process.terminate()
        process.wait(timeout=10)


def measure(
    request: GrpcRequest,
    concurrencies: Sequence[int],
    processes: Sequence[int],
    engines: Sequence[str],
    duration_s: float,
    label: str,
) -> list[dict[str, Any]]:
    """One run per engine, concurrency and worker count (after a short warm-up each)."""
    rows = []
    for engine, concurrency, workers in itertools.product(engines, concurrencies, processes):
        load = functools.partial(run, processes=workers, engine=engine)
        load(request, concurrency, 0.5)
        result = load(request, concurrency, duration_s)
        rows.append(
            {
                "target": label,
                "generator": engine,
                "concurrency": concurrency,
                "processes": workers,
                "throughput": round(result.throughput, 1),
                "p50_ms": round(result.latency_ms["p50"], 3),
                "p99_ms": round(result.latency_ms["p99"], 3),
                "errors": result.errors,
                "client_cpu_us_per_call": round(result.client_cpu_us_per_call, 1),
            }
        )
        time.sleep(0.3)
    return rows


def _ints(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.grpc_ceiling", description=__doc__)
    parser.add_argument("--concurrency", type=_ints, default=[1, 32])
    parser.add_argument("--processes", type=_ints, default=[1, 2])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--engines", default="cpp,python")
    parser.add_argument("--server", choices=["cpp", "python"], default="cpp")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--target", default=None, help="measure this server instead (host:port)")
    parser.add_argument("--body", type=Path, default=None, help="request file for --target")
    parser.add_argument("--out-dir", type=Path, default=BUILD_DIR.parent)
    args = parser.parse_args(argv)
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return 0
    engines = args.engines.split(",")
    with ExitStack() as stack:
        target = args.target or stack.enter_context(echo_server(args.server, args.out_dir))
        body = args.body.read_bytes() if args.body else ECHO_REQUEST
        label = args.target or f"echo-{args.server}"
        request = GrpcRequest(target, body)
        for row in measure(
            request, args.concurrency, args.processes, engines, args.duration, label
        ):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
