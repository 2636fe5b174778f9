"""`python -m loadtests.bench`: the same ONNX files through every system, one at a time.

For each server (our gateway, TorchServe, PyTriton, KServe, MLServer) it starts the processes on
127.0.0.1, waits until every model is ready (cold start), and sweeps the concurrency with wrk
posting one fixed body per model. The raw limit is ONNX Runtime called in-process. Results go to
a JSON file; `docs/benchmarks.md` and its plots are regenerated from it (see `loadtests.report`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from loadtests.drive import wrk
from loadtests.drive.catalog import DEFAULT_MODELS, BenchModel, ModelMissing, load_model
from loadtests.drive.grpc_load import cpp, runner
from loadtests.drive.grpc_load.request import GrpcRequest
from loadtests.drive.points import Load, check, log, measure_point, median_run
from loadtests.reporting.records import (
    Config,
    Failure,
    GeneratorCeiling,
    Machine,
    Point,
    RawModel,
    Results,
    ServerRecord,
    Skipped,
    SkippedModel,
)
from loadtests.systems import floors, gateway, peers, procs, raw, torchserve
from loadtests.systems.deployment import Context, Deployment, ServerKind, Unavailable
from loadtests.systems.machine import describe

SERVERS: tuple[ServerKind, ...] = (
    ServerKind("gateway", gateway.GATEWAY_SYSTEMS, gateway.gateway),
    ServerKind("floors", floors.FLOOR_SYSTEMS, floors.floors),
    ServerKind("gateway-2workers", ("gateway-2workers-v2-json",), gateway.gateway_workers),
    ServerKind(
        "torchserve",
        ("torchserve", "gateway-torchserve-v2-json", "gateway-native-mar"),
        torchserve.torchserve,
    ),
    ServerKind(
        "pytriton",
        ("pytriton-v2-json", "pytriton-v2-binary", "pytriton-v2-grpc"),
        peers.pytriton,
    ),
    ServerKind("kserve", ("kserve-v2-json",), peers.kserve),
    ServerKind("mlserver", ("mlserver-v2-json",), peers.mlserver),
    ServerKind("litserve", ("litserve-v2-json",), peers.litserve),
    ServerKind(
        "gateway-torchscript", ("gateway-torchscript-v2-binary",), gateway.gateway_torchscript
    ),
)
GPU_ONLY = {"gateway-torchscript"}
ALL_SYSTEMS = ("raw", *(system for server in SERVERS for system in server.systems))
GPU_MODELS = ("resnet50",)
RAW_BATCHES = (1, 2, 4, 8, 16, 32, 64)
REPO = Path(__file__).resolve().parent.parent


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _ints(text: str) -> list[int]:
    return [int(item) for item in _csv(text)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-store", type=Path, default=REPO / "model_store")
    parser.add_argument(
        "--models",
        type=_csv,
        default=None,
        help=f"comma-separated (default: {','.join(DEFAULT_MODELS)}; "
        f"with --device cuda also {','.join(GPU_MODELS)} when present)",
    )
    parser.add_argument(
        "--systems",
        type=_csv,
        default=None,
        help="comma-separated systems or server names (default: all); "
        f"systems: {','.join(ALL_SYSTEMS)}",
    )
    parser.add_argument("--concurrency", type=_ints, default=[1, 4, 16, 32, 64])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per point")
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of unrecorded load before each point (0: none)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each point this many times, the systems taking turns, and keep the "
        "median run (odd numbers; the others' figures are kept as 'repeats')",
    )
    parser.add_argument("--raw-batches", type=_ints, default=list(RAW_BATCHES))
    parser.add_argument(
        "--raw-seconds", type=float, default=1.5, help="seconds per raw batch and setting"
    )
    parser.add_argument(
        "--raw-idle-ms",
        type=float,
        default=0.1,
        help="idle before each paced raw batch-1 call (0: not paced); the default is at least "
        "the floor's c=1 round trip here (0.05-0.07 ms), the least idle any server's calls have",
    )
    parser.add_argument(
        "--raw-rounds",
        type=int,
        choices=[1, 2],
        default=2,
        help="2: measure the raw limit again after the servers and keep the best",
    )
    parser.add_argument(
        "--grpc-generator",
        choices=cpp.ENGINES,
        default="auto",
        help="load generator for the gRPC systems: cpp (grpc_gen, built on first use; needs "
        "g++ and libgrpc++-dev), python (grpc.aio worker processes), auto (cpp if it builds)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "loadtests" / "results",
        help="where the results JSON and server logs go",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=REPO / "docs",
        help="regenerate DOCS/benchmarks.md, .json and images/bench_*.png",
    )
    parser.add_argument("--no-docs", action="store_true", help="write only the results JSON")
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="start one server at a time and sweep it whole (default: start every server, "
        "then load one system at a time, interleaved per model and concurrency)",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="skip peers whose venv is missing instead of creating it",
    )
    parser.add_argument(
        "--slo-ms",
        type=float,
        default=15.0,
        help="p99 bound for the 'best throughput within SLO' figure",
    )
    args = parser.parse_args(argv)
    wanted = args.systems or [
        s
        for s in ALL_SYSTEMS
        if args.device == "cuda" or not any(s in k.systems for k in SERVERS if k.name in GPU_ONLY)
    ]
    expanded: list[str] = []
    for item in wanted:
        server = next((k for k in SERVERS if k.name == item), None)
        names = list(server.systems) if server else [item]
        for name in names:
            if name not in ALL_SYSTEMS:
                parser.error(f"unknown system {name!r}; choose from {', '.join(ALL_SYSTEMS)}")
            if name not in expanded:
                expanded.append(name)
    args.systems = expanded
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def load_models(store: Path, names: Sequence[str], skipped: list[SkippedModel]) -> list[BenchModel]:
    models = []
    for name in names:
        try:
            models.append(load_model(store, name))
        except ModelMissing as error:
            log(f"skip model {name}: {error}")
            skipped.append(SkippedModel(model=name, reason=str(error)))
    return models


def run_raw(
    models: Sequence[BenchModel],
    args: argparse.Namespace,
    results: Results,
    round_: int | str,
    batches: Sequence[int] | None = None,
) -> None:
    """Measure the raw limit; a later round adds its points and the best of all is kept."""
    for model in models:
        points = raw.measure(
            model.version_dir,
            list(batches or args.raw_batches),
            args.raw_seconds,
            args.device,
            round_,
            args.raw_idle_ms,
        )
        entry = results.raw.setdefault(model.name, RawModel())
        entry.batches.extend(points)
        entry.summarize()
        log(
            f"  raw {model.name} (round {round_}): limit {entry.limit_items_per_s:.0f} items/s "
            f"at batch {entry.limit_batch}, batch-1 p50 {entry.batch1_p50_ms} ms "
            f"(paced: {entry.batch1_paced_p50_ms} ms)"
        )


def formed_batches(points: Sequence[Point], model: str, measured: Sequence[int]) -> list[int]:
    """The batch sizes the gateway formed for `model` (each point's mean rows per batch,
    rounded) that the raw limit has not measured yet: backend time per batch is compared with
    the raw call at the same size."""
    formed = {
        size
        for p in points
        if p.model == model and p.server_ms and (size := p.server_ms.formed_batch) is not None
    }
    return sorted(formed - set(measured))


@dataclass
class Running:
    kind: ServerKind
    systems: list[str]
    deployment: Deployment


def start_server(
    kind: ServerKind,
    ctx: Context,
    args: argparse.Namespace,
    results: Results,
    stack: ExitStack,
) -> Running | None:
    """Start one server inside `stack`; None (and a recorded reason) when it cannot run."""
    wanted = [s for s in kind.systems if s in args.systems]
    if not wanted:
        return None
    log(f"server {kind.name}: starting ({', '.join(wanted)})")
    try:
        deployment = stack.enter_context(kind.start(ctx))
    except Unavailable as error:
        log(f"skip {kind.name}: {error}")
        results.skipped.append(Skipped(server=kind.name, systems=wanted, reason=str(error)))
        return None
    except Exception as error:  # one broken server must not end the whole run
        log(f"server {kind.name} failed: {error}")
        traceback.print_exc()
        reason = f"failed: {type(error).__name__}: {error}"
        results.skipped.append(Skipped(server=kind.name, systems=wanted, reason=reason))
        return None
    for info in deployment.servers:
        log(f"  {info.name}: ready in {info.cold_start_s:.1f} s, RSS {info.rss_ready_mb:.0f} MiB")
    return Running(kind, wanted, deployment)


def sweep(
    models: Sequence[BenchModel],
    running: Sequence[Running],
    args: argparse.Namespace,
    results: Results,
    *,
    with_raw: bool,
) -> None:
    """Per model and concurrency, load each system in turn (one at a time), so that systems
    compared at a point are measured minutes apart at most, whatever else the machine does."""
    load = Load(args.duration, args.warmup, args.grpc_generator)
    for model in models:
        if with_raw:
            run_raw([model], args, results, 1)
        targets = []
        for run in running:
            for system in run.systems:
                request = run.deployment.targets[system][model.name]
                problem = check(request)
                if problem is None:
                    targets.append(
                        (
                            system,
                            request,
                            run.deployment.metrics.get(system),
                            run.deployment.pids_of(system),
                        )
                    )
                    continue
                log(f"  {system} / {model.name}: not measured: {problem}")
                results.failures.append(Failure(system=system, model=model.name, error=problem))
        for concurrency in args.concurrency:
            runs: dict[str, list[Point]] = {system: [] for system, _, _, _ in targets}
            for repetition in range(args.repeat):
                for system, request, metrics_url, pids in targets:
                    runs[system].append(
                        measure_point(
                            system,
                            model.name,
                            request,
                            concurrency,
                            load,
                            metrics_url,
                            warm_up=repetition == 0,
                            pids=pids,
                        )
                    )
            results.points += [median_run(points) for points in runs.values()]
        if with_raw and args.raw_rounds > 1:
            run_raw([model], args, results, 2)
        if with_raw:
            measured = [p.batch for p in results.raw[model.name].batches]
            formed = formed_batches(results.points, model.name, measured)
            if formed:
                run_raw([model], args, results, "formed", formed)


def record_servers(running: Sequence[Running], results: Results) -> None:
    for run in running:
        for info in run.deployment.servers:
            info.rss_loaded_mb = procs.tree_rss_mb(info.pid)
            results.servers[info.name] = ServerRecord(
                name=info.name,
                pid=info.pid,
                settings=info.settings,
                systems=run.systems,
                cold_start_s=round(info.cold_start_s, 2),
                rss_ready_mb=round(info.rss_ready_mb, 1),
                rss_loaded_mb=round(info.rss_loaded_mb, 1),
            )


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the `with` blocks, which stop every server


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    wrk.wrk_path()  # fail early, before anything starts
    if any(name.endswith("-grpc") for name in args.systems):
        args.grpc_generator = cpp.pick_engine(args.grpc_generator)  # build it now
        log(f"gRPC load generator: {args.grpc_generator}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work_dir = args.out / f"bench-{stamp}"
    work_dir.mkdir(parents=True)
    names = args.models or [*DEFAULT_MODELS, *(GPU_MODELS if args.device == "cuda" else ())]
    results = Results(
        machine=Machine.model_validate(describe(args.device)),
        config=Config(
            models=names,
            systems=args.systems,
            concurrency=args.concurrency,
            duration_s=args.duration,
            warmup_s=args.warmup,
            repeat=args.repeat,
            raw_batches=args.raw_batches,
            device=args.device,
            slo_p99_ms=args.slo_ms,
            grpc_generator=args.grpc_generator,
            command=" ".join(
                ["python -m loadtests.bench", *(sys.argv[1:] if argv is None else argv)]
            ),
        ),
    )
    models = load_models(args.model_store.resolve(), names, results.skipped_models)
    if not models:
        log("no model to benchmark")
        return 1
    started = time.monotonic()
    ctx = Context(
        store=serving_store(models, work_dir / "store"),
        models=models,
        work_dir=work_dir.resolve(),
        device=args.device,
        install=not args.no_install,
    )
    if any(name.endswith("-grpc") for name in args.systems):
        results.grpc_generator = measure_generator(args, work_dir)
    with_raw = "raw" in args.systems
    if args.sequential:  # one server alive at a time; the raw limit before and after them all
        if with_raw:
            run_raw(models, args, results, 1)
        for kind in SERVERS:
            with ExitStack() as stack:
                running = [r for r in [start_server(kind, ctx, args, results, stack)] if r]
                sweep(models, running, args, results, with_raw=False)
                record_servers(running, results)
        if with_raw and args.raw_rounds > 1:
            run_raw(models, args, results, 2)
    else:  # every server up (idle but one), points interleaved
        with ExitStack() as stack:
            running = [
                r for kind in SERVERS if (r := start_server(kind, ctx, args, results, stack))
            ]
            sweep(models, running, args, results, with_raw=with_raw)
            record_servers(running, results)
    if args.docs.joinpath("benchmarks.json").exists():  # the REST figures before this run
        from loadtests.reporting.lookup import baseline_of

        previous = json.loads(args.docs.joinpath("benchmarks.json").read_text())
        results.baseline = baseline_of(previous)
    results.config.order = "sequential" if args.sequential else "interleaved"
    results.machine.load_average_end = [round(x, 2) for x in os.getloadavg()]
    results.config.wall_s = round(time.monotonic() - started, 1)
    out_file = args.out / f"bench-{stamp}.json"
    out_file.write_text(json.dumps(results.dump(), indent=1) + "\n")
    shutil.copyfile(out_file, args.out / "latest.json")
    log(f"results: {out_file}")
    if not args.no_docs:
        from loadtests.report import write_docs

        for path in write_docs(results, args.docs):
            log(f"wrote {path}")
    return 0


def measure_generator(args: argparse.Namespace, work_dir: Path) -> GeneratorCeiling:
    """The gRPC generator's ceiling here: against a do-nothing C++ server, at each benchmarked
    concurrency's ends (c=1 and the highest), with the CPU it spends per call."""
    from loadtests import grpc_ceiling

    engine = args.grpc_generator
    server = "cpp" if engine == "cpp" else "python"
    concurrencies = sorted({1, max(args.concurrency)})
    # The Python generator too, for comparison, when the C++ one is the one in use.
    engines = [engine, "python"] if engine == "cpp" else [engine]
    with grpc_ceiling.echo_server(server, work_dir) as target:
        rows = grpc_ceiling.measure(
            GrpcRequest(target, grpc_ceiling.ECHO_REQUEST),
            concurrencies,
            [runner.default_processes(max(concurrencies))],
            engines,
            max(1.0, min(args.duration, 3.0)),
            f"echo-{server}",
        )
    ceiling = GeneratorCeiling.model_validate(
        {"engine": engine, "server": f"echo-{server}", "points": rows}
    )
    for row in ceiling.points:
        log(
            f"  gRPC generator {row.generator} vs echo-{server} c={row.concurrency}: "
            f"{row.throughput:.0f} req/s, p50 {row.p50_ms:.2f} ms, "
            f"{row.client_cpu_us_per_call:.0f} µs CPU per call"
        )
    return ceiling


def serving_store(models: Sequence[BenchModel], root: Path) -> Path:
    """A store holding exactly the benchmarked version of each model (links, no copies), so
    every server loads the same files and the gateway's memory is not inflated by older
    versions that happen to sit in the user's store."""
    for model in models:
        link = root / model.name / model.version_dir.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(model.version_dir.resolve(), target_is_directory=True)
    return root.resolve()


if __name__ == "__main__":
    sys.exit(main())
