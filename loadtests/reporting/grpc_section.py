"""The gRPC load generator's section: its ceiling against a do-nothing server beside the fastest
gRPC points of the run."""

from __future__ import annotations

from loadtests.reporting.records import Results
from loadtests.reporting.text import ABSENT, ms, num

GENERATOR_NAMES = {
    "cpp": "`grpc_gen` (C++, `loadtests/grpc_gen/grpc_gen.cc`: gRPC's generic stub, one channel "
    "and completion queue per thread, the request pre-serialized, answers unparsed)",
    "python": "`grpc.aio` worker processes (Python, `loadtests/grpc_load.py`: one event loop and "
    "channel per process, the request pre-serialized, answers unparsed)",
}


def generator_section(results: Results) -> list[str]:
    """The gRPC generator's ceiling (a do-nothing server) beside the fastest gRPC points."""
    info = results.grpc_generator
    if info is None:
        return []
    engine = info.engine
    when = (
        f"measured on {info.measured}, separately from the figures on this page"
        if info.measured
        else "measured at the start of this run"
    )
    lines = [
        "## gRPC load generator",
        "",
        f"The `-grpc` systems are loaded by {GENERATOR_NAMES.get(engine, engine)}, keeping "
        "`concurrency` calls in flight back to back for the same duration as wrk's points. "
        f"Its ceiling here ({when}) is its rate against `{info.server}`, a server that "
        "answers every call with one fixed, pre-serialized response, on the same shared cores "
        "as every benchmarked server:",
        "",
        "| Generator | Concurrency | Ceiling (req/s) | p50 (ms) | Generator CPU per call (µs) "
        "| Fastest gRPC system here (req/s) | Fastest ÷ ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    grpc_points = [p for p in results.points if p.system.endswith("-grpc")]
    for row in info.points:
        same = [p for p in grpc_points if p.concurrency == row.concurrency]
        fastest = max(same, key=lambda p: p.throughput) if same else None
        used = row.generator == engine
        ratio = (
            f"{fastest.throughput / row.throughput:.2f} (`{fastest.system}`, {fastest.model})"
            if fastest and row.throughput and used
            else ABSENT
        )
        lines.append(
            f"| {row.generator}{'' if used else ' (not used)'} | "
            f"{row.concurrency} | {num(row.throughput)} | {ms(row.p50_ms)} | "
            f"{row.client_cpu_us_per_call:.0f} | "
            f"{num(fastest.throughput) if fastest and used else ABSENT} | {ratio} |"
        )
    return [
        *lines,
        "",
        "A ratio well below 1 means the server, not the generator, set the figure; the CPU per "
        "call times a system's rate is the share of a core the generator took from the server "
        "(it grows against a slow server, where fewer answers arrive per wake-up: per point "
        "it is in `client_cpu_us_per_call` in benchmarks.json).",
        *(["", info.note] if info.note else []),
        "",
    ]
