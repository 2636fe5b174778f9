"""Side-by-side A/B of the gateway's CPU per request: two source trees, interleaved rounds.

    git archive HEAD~1 | tar -x -C /tmp/base
    python -m loadtests.cpu_ab --a /tmp/base --b . --model-store model_store --models iris \\
        --protocols rest,grpc --rounds 4 --seconds 5

Starts `python -m service` from each tree (the same interpreter, each tree's own `service`
package), then for every protocol and model loads A and B in turn, A B B A A B..., at one
concurrency (wrk for V2 JSON and `/predictions`; the gRPC generator for ModelInfer), and reads
each server's CPU (utime + stime of its process tree) around each run. Prints every round and the medians of CPU
ms per answered request and req/s, and B ÷ A. Absolute figures on a shared machine move from
run to run; the ratio measured in one run does not.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from loadtests.drive import wrk
from loadtests.drive.catalog import BenchModel, load_model
from loadtests.drive.grpc_load import runner
from loadtests.drive.grpc_load.probe import wait_serving
from loadtests.drive.points import check
from loadtests.systems import procs
from loadtests.systems.deployment import Target
from loadtests.systems.gateway import gateway_command
from loadtests.systems.targets import (
    grpc_request,
    predictions_request,
    ready_urls,
    v2_requests,
)


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


@contextmanager
def gateway(
    tree: Path, store: Path, models: Sequence[BenchModel], log: Path, extra: Sequence[str]
) -> Iterator[tuple[str, str, int]]:
    port, grpc_port = procs.free_port(), procs.free_port()
    command = gateway_command(store, port, grpc_port, [m.name for m in models], extra)
    process = procs.spawn(command, log, {"PYTHONPATH": str(tree)}, cwd=tree)
    try:
        base = f"http://127.0.0.1:{port}"
        procs.wait_ready(ready_urls(base, models), process, 120)
        wait_serving(f"127.0.0.1:{grpc_port}", 30, process)
        yield base, f"127.0.0.1:{grpc_port}", process.pid
    finally:
        procs.stop(process)


PROTOCOLS = ("rest", "grpc", "predictions")


def target_for(protocol: str, model: BenchModel, base: str, grpc: str) -> Target:
    """V2 JSON (`rest`), ModelInfer (`grpc`) or TorchServe's `/predictions` with the model's
    native body (an image file, the text, JSON features)."""
    if protocol == "rest":
        return v2_requests(base, model, binary=False)
    if protocol == "grpc":
        return grpc_request(grpc, model)
    return predictions_request(base, model)


def one_run(target: Target, pid: int, concurrency: int, seconds: float) -> tuple[float, float]:
    """(CPU ms per answered request, req/s) of one run."""
    before = procs.tree_cpu_s([pid])
    if isinstance(target, wrk.Request):
        result = wrk.run(target, concurrency, seconds)
    else:
        result = runner.run(target, concurrency, seconds, engine="auto")
    used = procs.tree_cpu_s([pid]) - before
    answered = result.requests - result.errors
    return (used * 1000 / answered if answered else float("nan")), result.throughput


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.cpu_ab", description=__doc__)
    parser.add_argument("--a", type=Path, required=True, help="source tree A (the baseline)")
    parser.add_argument("--b", type=Path, required=True, help="source tree B")
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--models", type=_csv, default=["iris"])
    parser.add_argument(
        "--protocols", type=_csv, default=["rest", "grpc"], help=f"any of {', '.join(PROTOCOLS)}"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4, help="runs of each tree")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--gateway-args", default="", help="extra `python -m service` arguments")
    parser.add_argument("--b-args", default="", help="more arguments for B only (a setting's A/B)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/cpu_ab"))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.protocols) - set(PROTOCOLS))
    if unknown:
        parser.error(f"unknown protocols {unknown}; choose from {', '.join(PROTOCOLS)}")
    models = [load_model(args.model_store.resolve(), name) for name in args.models]
    extra = args.gateway_args.split()
    with ExitStack() as stack:
        servers = {
            label: stack.enter_context(
                gateway(
                    tree.resolve(),
                    args.model_store.resolve(),
                    models,
                    args.work_dir / f"{label}.log",
                    [*extra, *(args.b_args.split() if label == "B" else [])],
                )
            )
            for label, tree in (("A", args.a), ("B", args.b))
        }
        order = ["A", "B", "B", "A"] * ((args.rounds + 1) // 2)
        for protocol in args.protocols:
            for model in models:
                targets: dict[str, Target] = {
                    label: target_for(protocol, model, base, grpc)
                    for label, (base, grpc, _pid) in servers.items()
                }
                for label, target in targets.items():
                    problem = check(target)
                    if problem:
                        raise SystemExit(f"{label} {protocol} {model.name}: {problem}")
                    one_run(target, servers[label][2], args.concurrency, 1.0)  # warm up
                figures: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
                for label in order[: 2 * args.rounds]:
                    cpu, rps = one_run(
                        targets[label], servers[label][2], args.concurrency, args.seconds
                    )
                    figures[label].append((cpu, rps))
                    print(
                        f"{protocol} {model.name} c={args.concurrency} {label}: "
                        f"{cpu:.4f} ms CPU/req {rps:8.0f} req/s",
                        flush=True,
                    )
                cpu_a = statistics.median(c for c, _ in figures["A"])
                cpu_b = statistics.median(c for c, _ in figures["B"])
                rps_a = statistics.median(r for _, r in figures["A"])
                rps_b = statistics.median(r for _, r in figures["B"])
                print(
                    f"== {protocol} {model.name} c={args.concurrency}: A {cpu_a:.4f} ms CPU/req "
                    f"{rps_a:.0f} req/s | B {cpu_b:.4f} ms CPU/req {rps_b:.0f} req/s | "
                    f"B/A CPU {cpu_b / cpu_a:.3f}, req/s {rps_b / rps_a:.3f}",
                    flush=True,
                )
                time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
