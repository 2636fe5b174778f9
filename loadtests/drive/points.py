"""One benchmark point: a check that the system answers, one wrk (or gRPC generator) run at one
concurrency, the gateway's own split of that run from its `/metrics`, and the median of repeats."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from loadtests.drive import http_load, wrk
from loadtests.drive.grpc_load import probe, runner
from loadtests.drive.grpc_load.histogram import GrpcResult
from loadtests.drive.grpc_load.request import GrpcRequest
from loadtests.reporting.records import Latency, Point, ServerSplit
from loadtests.systems import procs, server_metrics
from loadtests.systems.deployment import Target


@dataclass(frozen=True)
class Load:
    """How every point is loaded."""

    duration_s: float
    """Seconds measured."""
    warmup_s: float
    """Seconds of unrecorded load before a point's first run (0: none)."""
    grpc_engine: str = "auto"
    """The gRPC generator: "cpp", "python" or "auto"."""
    http_engine: str = "wrk"
    """The HTTP generator: "wrk", or "python" (`http_load`, where wrk is not installed)."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def check(request: Target) -> str | None:
    """One request before the sweep: None when it answers 200 (gRPC: OK with outputs), else
    what went wrong."""
    if isinstance(request, GrpcRequest):
        return probe.check(request)
    http = urllib.request.Request(
        request.url, data=request.body, headers=request.headers, method="POST"
    )
    try:
        with urllib.request.urlopen(http, timeout=60) as response:
            response.read()
            return None
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}: {error.read()[:300].decode(errors='replace')}"
    except (urllib.error.URLError, OSError) as error:
        return f"request failed: {error}"


def measure_point(
    system: str,
    model: str,
    request: Target,
    concurrency: int,
    load_with: Load,
    metrics_url: str | None = None,
    *,
    warm_up: bool = True,
    pids: Sequence[int] = (),
) -> Point:
    """One wrk (or gRPC generator) run; for our gateway also its own split of the time, from
    /metrics; with `pids` (the server's root processes) its CPU time per answered request."""

    def load(seconds: float) -> wrk.WrkResult:
        if isinstance(request, GrpcRequest):
            return runner.run(request, concurrency, seconds, engine=load_with.grpc_engine)
        if load_with.http_engine == "python":
            return http_load.run(request, concurrency, seconds)
        return wrk.run(request, concurrency, seconds)

    if warm_up and load_with.warmup_s > 0:
        load(load_with.warmup_s)
    before = server_metrics.scrape(metrics_url) if metrics_url else None
    cpu_before = procs.tree_cpu_s(pids) if pids else None
    result = load(load_with.duration_s)
    cpu_s = procs.tree_cpu_s(pids) - cpu_before if cpu_before is not None else None
    point = Point(
        system=system,
        model=model,
        concurrency=concurrency,
        requests=result.requests,
        errors=result.errors,
        seconds=round(result.seconds, 3),
        throughput=round(result.throughput, 2),
        latency_ms=Latency.model_validate({k: round(v, 3) for k, v in result.latency_ms.items()}),
    )
    answered = result.requests - result.errors
    if cpu_s is not None and answered > 0:
        point.server_cpu_ms = round(cpu_s * 1000.0 / answered, 4)
    if isinstance(result, GrpcResult):
        point.generator = result.generator
        point.client_cpu_us_per_call = round(result.client_cpu_us_per_call, 1)
        point.error_codes = result.error_codes or None
    server = ""
    if metrics_url and before is not None:
        rows = [
            r
            for r in server_metrics.split(before, server_metrics.scrape(metrics_url))
            if r.model == model
        ]
        if rows:
            split = ServerSplit.model_validate(
                {
                    key: round(value, 3) if isinstance(value, float) else value
                    for key, value in asdict(rows[0]).items()
                }
            )
            point.server_ms = split
            server = (
                f"  [server: request {split.request_mean_ms or 0:.2f}, "
                f"queue {split.queue_mean_ms or 0:.2f}, "
                f"compute {split.compute_mean_ms or 0:.2f} ms"
                + (
                    f" (backend {split.backend_mean_ms:.2f})"
                    if split.backend_mean_ms is not None
                    else ""
                )
                + f", batch {split.mean_batch_size or 0:.1f}]"
            )
    log(
        f"  {system:28s} {model:9s} c={concurrency:<3d} {result.throughput:9.1f} req/s  "
        f"p50 {result.latency_ms['p50']:8.2f} ms  p99 {result.latency_ms['p99']:8.2f} ms"
        + (f"  errors {result.errors}" if result.errors else "")
        + (f"  CPU {point.server_cpu_ms:.3f} ms/req" if point.server_cpu_ms is not None else "")
        + server
    )
    return point


def median_run(points: Sequence[Point]) -> Point:
    """The run with the median throughput (the lower one of an even count), whole, so that its
    latencies and server split belong together; the other runs' throughputs go to 'repeats'."""
    ordered = sorted(points, key=lambda point: point.throughput)
    chosen = ordered[(len(ordered) - 1) // 2].model_copy()
    if len(points) > 1:
        chosen.repeats = [point.throughput for point in points]
    return chosen
