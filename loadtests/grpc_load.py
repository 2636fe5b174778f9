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
import asyncio
import hashlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from loadtests.wrk import WrkResult

REPO = Path(__file__).resolve().parent.parent
CPP_SOURCE = Path(__file__).resolve().parent / "grpc_gen" / "grpc_gen.cc"
BUILD_DIR = REPO / "loadtests" / "results" / "bin"
"""Where grpc_gen is built (git-ignored, like every result)."""
ENGINES = ("auto", "cpp", "python")
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
MARK = "GRPC_RESULT "
READY = "GRPC_READY"
BUCKET_GROWTH = 1.01
"""Histogram bucket i holds latencies in [1.01**i, 1.01**(i+1)) microseconds: 1 % resolution."""
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p99.9", 99.9))
CHANNEL_OPTIONS = (
    # Each channel its own TCP connection, even for the same target in one process.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)


class GrpcLoadError(RuntimeError):
    """A worker failed to start, could not reach the target, or printed no result."""


@dataclass(frozen=True)
class GrpcRequest:
    """One fixed gRPC call: the same serialized message every time."""

    target: str
    """host:port"""
    body: bytes
    """The serialized request message (a ModelInferRequest for INFER_METHOD)."""
    method: str = INFER_METHOD
    metadata: tuple[tuple[str, str], ...] = ()


# --- the histogram: what workers send back, and how the parent merges it --------------------


def bucket_of(latency_us: float) -> int:
    return int(math.log(max(latency_us, 1.0), BUCKET_GROWTH))


@dataclass
class Histogram:
    counts: Counter[int]
    total_us: float = 0.0
    max_us: float = 0.0

    @classmethod
    def of(cls, latencies_us: Iterable[float]) -> Histogram:
        values = list(latencies_us)
        return cls(
            Counter(bucket_of(v) for v in values),
            float(sum(values)),
            max(values, default=0.0),
        )

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: Histogram) -> Histogram:
        return Histogram(
            self.counts + other.counts,
            self.total_us + other.total_us,
            max(self.max_us, other.max_us),
        )

    def percentile_us(self, q: float) -> float:
        """The geometric middle of the bucket holding the q-th percentile (nearest rank)."""
        count = self.count
        if count == 0:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * count))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return float(min(BUCKET_GROWTH ** (bucket + 0.5), self.max_us))
        return self.max_us

    def latency_ms(self) -> dict[str, float]:
        """mean, p50, p90, p95, p99, p99.9, max, as WrkResult has them."""
        count = self.count
        out = {"mean": self.total_us / count / 1000.0 if count else 0.0}
        out.update({name: self.percentile_us(q) / 1000.0 for name, q in PERCENTILES})
        out["max"] = self.max_us / 1000.0
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "buckets": {str(k): v for k, v in sorted(self.counts.items())},
            "total_us": self.total_us,
            "max_us": self.max_us,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        return cls(
            Counter({int(k): int(v) for k, v in data["buckets"].items()}),
            float(data["total_us"]),
            float(data["max_us"]),
        )


@dataclass(frozen=True)
class WorkerResult:
    requests: int
    errors: int
    seconds: float
    cpu_s: float
    """The worker's own user + system CPU time during the measured run."""
    histogram: Histogram
    error_codes: dict[str, int]

    def to_line(self) -> str:
        return MARK + json.dumps(
            {
                "requests": self.requests,
                "errors": self.errors,
                "seconds": self.seconds,
                "cpu_s": self.cpu_s,
                "latency": self.histogram.to_json(),
                "error_codes": self.error_codes,
            }
        )


def parse_worker(output: str) -> WorkerResult:
    for line in output.splitlines():
        if line.startswith(MARK):
            data: dict[str, Any] = json.loads(line[len(MARK) :])
            return WorkerResult(
                requests=int(data["requests"]),
                errors=int(data["errors"]),
                seconds=float(data["seconds"]),
                cpu_s=float(data["cpu_s"]),
                histogram=Histogram.from_json(data["latency"]),
                error_codes={str(k): int(v) for k, v in data.get("error_codes", {}).items()},
            )
    raise GrpcLoadError(f"worker printed no {MARK.strip()} line:\n{output[-2000:]}")


@dataclass(frozen=True)
class GrpcResult(WrkResult):
    """WrkResult plus what only this generator knows: its own CPU time and the error codes."""

    client_cpu_s: float = 0.0
    error_codes: dict[str, int] | None = None
    generator: str = ""
    """"cpp" (grpc_gen) or "python" (grpc.aio workers)."""

    @property
    def client_cpu_us_per_call(self) -> float:
        return self.client_cpu_s / self.requests * 1e6 if self.requests else 0.0


def merge(results: Sequence[WorkerResult]) -> GrpcResult:
    """Workers ran side by side: add requests and histograms; the run lasted the longest one."""
    if not results:
        raise GrpcLoadError("no worker results to merge")
    histogram = results[0].histogram
    for result in results[1:]:
        histogram = histogram.merge(result.histogram)
    codes: Counter[str] = Counter()
    for result in results:
        codes.update(result.error_codes)
    return GrpcResult(
        requests=sum(r.requests for r in results),
        seconds=max(r.seconds for r in results),
        errors=sum(r.errors for r in results),
        latency_ms=histogram.latency_ms(),
        client_cpu_s=sum(r.cpu_s for r in results),
        error_codes=dict(codes),
    )


def split(concurrency: int, parts: int) -> list[int]:
    """`concurrency` calls over `parts` workers, as evenly as possible, none empty."""
    parts = max(1, min(parts, concurrency))
    return [concurrency // parts + (1 if i < concurrency % parts else 0) for i in range(parts)]


# --- the worker ------------------------------------------------------------------------------


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _work(
    request: GrpcRequest, concurrency: int, seconds: float, timeout_s: float, channels: int
) -> WorkerResult:
    import grpc

    opened = [
        grpc.aio.insecure_channel(request.target, options=list(CHANNEL_OPTIONS))
        for _ in range(max(1, min(channels, concurrency)))
    ]
    # No serializers: the bytes go out as they are and the answer stays unparsed.
    calls = [channel.unary_unary(request.method) for channel in opened]
    metadata = tuple(request.metadata) or None
    try:
        for call in calls:  # connect, and fail early (exit 2) if the call itself is refused
            await call(request.body, timeout=timeout_s, metadata=metadata)
        print(READY, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)  # the parent's "go"
        latencies: list[float] = []
        codes: Counter[str] = Counter()
        started = time.perf_counter()
        deadline = started + seconds
        cpu_before = _cpu_s()

        async def user(index: int) -> None:
            call = calls[index % len(calls)]
            clock = time.perf_counter
            append = latencies.append
            while clock() < deadline:
                sent = clock()
                try:
                    await call(request.body, timeout=timeout_s, metadata=metadata)
                except grpc.aio.AioRpcError as error:
                    codes[error.code().name] += 1
                append((clock() - sent) * 1e6)

        await asyncio.gather(*(user(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = _cpu_s() - cpu_before
    finally:
        for channel in opened:
            await channel.close()
    return WorkerResult(
        requests=len(latencies),
        errors=sum(codes.values()),
        seconds=elapsed,
        cpu_s=cpu,
        histogram=Histogram.of(latencies),
        error_codes=dict(codes),
    )


def worker_main(args: argparse.Namespace) -> int:
    request = GrpcRequest(
        args.target,
        Path(args.body).read_bytes(),
        args.method,
        _metadata(args.metadata),
    )
    try:
        result = asyncio.run(
            _work(request, args.concurrency, args.duration, args.timeout, args.channels)
        )
    except Exception as error:  # the first call failed: say why, the parent raises it
        print(f"worker failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return 2
    print(result.to_line(), flush=True)
    return 0


# --- the parent ------------------------------------------------------------------------------


def default_processes(concurrency: int) -> int:
    return max(1, min(concurrency, os.cpu_count() or 1))


def run(
    request: GrpcRequest,
    concurrency: int,
    seconds: float,
    *,
    processes: int | None = None,
    channels_per_process: int = 1,
    timeout_s: float = 10.0,
    startup_timeout_s: float = 30.0,
    engine: str = "auto",
) -> GrpcResult:
    """Keep `concurrency` calls in flight for `seconds`.

    engine "cpp": one grpc_gen process with `processes` threads (each its own channel and
    completion queue); "python": `processes` grpc.aio worker processes; "auto": cpp when it
    can be built here, else python. `processes` defaults to one per core (at most
    `concurrency`).
    """
    chosen = pick_engine("python" if engine == "auto" and request.metadata else engine)
    if chosen == "cpp" and request.metadata:
        raise GrpcLoadError("grpc_gen sends no metadata: use engine 'python' for that")
    parts = processes or default_processes(concurrency)
    with tempfile.NamedTemporaryFile(prefix="grpc-body-", suffix=".bin") as body:
        body.write(request.body)
        body.flush()
        if chosen == "cpp":
            commands = [
                [
                    str(cpp_binary()),
                    request.target,
                    request.method,
                    body.name,
                    str(concurrency),
                    str(seconds),
                    str(timeout_s),
                    str(max(1, min(parts, concurrency))),
                ]
            ]
        else:
            commands = [
                [
                    sys.executable,
                    "-m",
                    "loadtests.grpc_load",
                    "--worker",
                    "--target",
                    request.target,
                    "--method",
                    request.method,
                    "--body",
                    body.name,
                    "--concurrency",
                    str(share),
                    "--duration",
                    str(seconds),
                    "--timeout",
                    str(timeout_s),
                    "--channels",
                    str(channels_per_process),
                    *(f"--metadata={k}={v}" for k, v in request.metadata),
                ]
                for share in split(concurrency, parts)
            ]
        outputs = _drive(commands, request.target, seconds + timeout_s + 30, startup_timeout_s)
    return replace(merge(outputs), generator=chosen)


def _drive(
    commands: Sequence[Sequence[str]], target: str, run_timeout_s: float, startup_timeout_s: float
) -> list[WorkerResult]:
    """Start every worker, wait until each has connected, start them together, collect."""
    workers: list[subprocess.Popen[str]] = []
    try:
        for command in commands:
            workers.append(
                subprocess.Popen(
                    list(command),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=REPO,
                )
            )
        deadline = time.monotonic() + startup_timeout_s
        for worker in workers:  # every worker connected before any starts the clock
            line = _readline(worker, deadline)
            if line.strip() != READY:
                if worker.poll() is None:
                    worker.kill()
                worker.wait(timeout=5)
                assert worker.stderr is not None
                raise GrpcLoadError(
                    f"gRPC load worker did not start ({target}): "
                    f"{(line + worker.stderr.read()).strip()[-800:]}"
                )
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = []
        for worker in workers:
            out, err = worker.communicate(timeout=run_timeout_s)
            if worker.returncode != 0:
                raise GrpcLoadError(f"gRPC load worker exited {worker.returncode}: {err[-800:]}")
            outputs.append(parse_worker(out))
        return outputs
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            for stream in (worker.stdin, worker.stdout, worker.stderr):
                if stream is not None and not stream.closed:
                    stream.close()


# --- the C++ generator: built once per source version, on demand ----------------------------


def cpp_binary() -> Path:
    """grpc_gen built from `grpc_gen/grpc_gen.cc` (cached by the source's hash)."""
    source = CPP_SOURCE.read_bytes()
    binary = BUILD_DIR / f"grpc_gen-{hashlib.sha256(source).hexdigest()[:12]}"
    if binary.exists():
        return binary
    compiler = shutil.which("g++")
    pkg_config = shutil.which("pkg-config")
    if compiler is None or pkg_config is None:
        raise GrpcLoadError("g++ and pkg-config are needed to build grpc_gen")
    flags = subprocess.run(
        [pkg_config, "--cflags", "--libs", "grpc++"], capture_output=True, text=True, check=False
    )
    if flags.returncode != 0:
        raise GrpcLoadError(
            "grpc++ development files missing (Debian: apt-get install libgrpc++-dev): "
            + flags.stderr.strip()[-300:]
        )
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(f".{os.getpid()}.tmp")
    done = subprocess.run(
        [
            compiler,
            "-O2",
            "-std=c++17",
            "-o",
            str(partial),
            str(CPP_SOURCE),
            *flags.stdout.split(),
            "-lpthread",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise GrpcLoadError(f"building grpc_gen failed: {done.stderr.strip()[-800:]}")
    partial.replace(binary)
    return binary


def pick_engine(engine: str) -> str:
    """The generator that will run: "cpp" or "python" ("auto": cpp if it builds)."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: choose from {', '.join(ENGINES)}")
    if engine != "auto":
        if engine == "cpp":
            cpp_binary()
        return engine
    try:
        cpp_binary()
    except GrpcLoadError:
        return "python"
    return "cpp"


def _readline(worker: subprocess.Popen[str], deadline: float) -> str:
    """One stdout line from a worker, or '' once the deadline passes or it exits."""
    import selectors

    assert worker.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(worker.stdout, selectors.EVENT_READ)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not selector.select(remaining):
            return ""
    return worker.stdout.readline()


GRPC_DEFAULT_PORT = 8001


def target_for(http_host: str | None, explicit: str | None = None) -> str:
    """`explicit` (host:port) when given, else the HTTP host's name on gRPC's default port."""
    if explicit:
        return explicit.removeprefix("grpc://").removeprefix("http://")
    name = urllib.parse.urlsplit(http_host or "").hostname or "127.0.0.1"
    return f"{name}:{GRPC_DEFAULT_PORT}"


def check(request: GrpcRequest, timeout_s: float = 60.0) -> str | None:
    """One call before the sweep: None when it answers OK with outputs, else what went wrong."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb

    with grpc.insecure_channel(request.target, options=list(CHANNEL_OPTIONS)) as channel:
        call = channel.unary_unary(request.method)
        try:
            answer = call(request.body, timeout=timeout_s, metadata=request.metadata or None)
        except grpc.RpcError as error:
            return f"gRPC {error.code().name}: {error.details()}"  # type: ignore[attr-defined]
    if request.method == INFER_METHOD:
        response = pb.ModelInferResponse.FromString(answer)
        if not response.outputs or len(response.raw_output_contents) != len(response.outputs):
            return f"answer without raw outputs: {str(response)[:300]}"
    return None


def wait_serving(target: str, timeout_s: float, process: Any = None) -> float:
    """Poll the standard health service until it says SERVING; return the seconds it took."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    started = time.monotonic()
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server exited with code {process.returncode} before gRPC")
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - started
            except grpc.RpcError:
                pass
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"gRPC {target} not SERVING after {timeout_s:.0f} s")
            time.sleep(0.05)


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
    if args.worker:
        return worker_main(args)
    request = GrpcRequest(
        args.target, Path(args.body).read_bytes(), args.method, _metadata(args.metadata)
    )
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
