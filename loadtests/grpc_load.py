"""Drive one benchmark point over gRPC: one fixed ModelInferRequest, a fixed concurrency.

wrk speaks HTTP/1.1 only, so gRPC systems get this generator instead. It runs `processes`
worker processes (default: one per core, at most one per in-flight call), each with its own
`grpc.aio` event loop and its own channel (one HTTP/2 connection; no shared subchannel pool),
keeping its share of the `concurrency` calls in flight back to back. The request is serialized
once and sent as bytes, and answers are not parsed (only the status is read), so no protobuf work
happens per call on the client. Workers record each latency into a log-bucketed histogram (1 %
wide buckets); the parent merges the histograms and reports a `WrkResult`, the shape wrk's
results have, so the bench treats both generators alike.

Its own cost and ceiling are in docs/benchmarks.md (how fast it goes against a do-nothing
server, and CPU per call): on a machine whose cores the server shares, that cost is what the
server does not get.

    python -m loadtests.grpc_load --target 127.0.0.1:8001 --model iris --body req.bin -c 32 -d 5
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from loadtests.drive.grpc_load import worker
from loadtests.drive.grpc_load.cpp import ENGINES
from loadtests.drive.grpc_load.request import INFER_METHOD, GrpcRequest
from loadtests.drive.grpc_load.runner import run


def _metadata(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    pairs = [item.split("=", 1) for item in items]
    return tuple((pair[0], pair[1] if len(pair) > 1 else "") for pair in pairs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.grpc_load", description=__doc__)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--method", default=INFER_METHOD)
    parser.add_argument("--body", required=True, help="file with the serialized request")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("--timeout", type=float, default=10.0, help="per call, seconds")
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--channels", type=int, default=1, help="channels per process")
    parser.add_argument("--metadata", action="append", default=[], help="key=value")
    parser.add_argument("--engine", choices=ENGINES, default="auto")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    request = GrpcRequest(
        args.target, Path(args.body).read_bytes(), args.method, _metadata(args.metadata)
    )
    if args.worker:
        return worker.serve(request, args.concurrency, args.duration, args.timeout, args.channels)
    result = run(
        request,
        args.concurrency,
        args.duration,
        processes=args.processes,
        channels_per_process=args.channels,
        timeout_s=args.timeout,
        engine=args.engine,
    )
    print(
        json.dumps(
            {
                "generator": result.generator,
                "requests": result.requests,
                "seconds": round(result.seconds, 3),
                "errors": result.errors,
                "error_codes": result.error_codes,
                "throughput": round(result.throughput, 1),
                "client_cpu_us_per_call": round(result.client_cpu_us_per_call, 1),
                "latency_ms": {k: round(v, 3) for k, v in result.latency_ms.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
