"""`python -m loadtests.gpu_check`: ResNet through the gateway's torch backends on a GPU, in one go.

For each model (resnet18 from `--model-store` when it holds one, else, like resnet50, built from
torchvision with random weights: nothing is downloaded) and each backend (TorchScript and
AOTInductor `.pt2`, compiled here for the device), it starts the gateway (`--backend B --device
cuda`, fp16 autocast, gRPC off), sweeps the concurrency with a V2 binary request of one image until
p99 passes `--slo-ms`, and keeps the best images/s within it. Then it calls the same model file
in-process at the batch sizes the gateway formed (raw torch, the same autocast) and writes one
JSON file: `$OUT/gpu_check.json` (or `--out`).

Load comes from the standard library (`drive.http_load`), so the machine needs no wrk, gRPC or
Locust; the gateway needs its own dependencies (FastAPI, uvicorn, pydantic...). A missing one is
named in the JSON and the raw figures are still measured. `--device cpu` runs the same on a tiny
CNN, for CI. A time budget (`--budget-s`) skips what would not fit, and says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("torchscript", "pt2")
GATEWAY_MODULES = (
    "fastapi",
    "uvicorn",
    "pydantic",
    "pydantic_settings",
    "prometheus_client",
    "orjson",
    "PIL",
    "psutil",
)
"""What the gateway (and starting it) imports with gRPC off and ONNX Runtime unused."""


@dataclass
class Run:
    """One model through one backend: the gateway's points, its best, raw torch beside it."""

    model: str
    backend: str
    points: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    """The highest images/s with p99 within the SLO and no errors."""
    raw: list[dict[str, Any]] = field(default_factory=list)
    best_vs_raw: float | None = None
    """Best images/s ÷ raw torch items/s at the batch size the best point formed."""
    error: str | None = None


@dataclass
class Check:
    machine: dict[str, Any]
    config: dict[str, Any]
    missing: list[str]
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.gpu_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--model-store", type=Path, help="take resnet18 from here when present")
    parser.add_argument("--models", help="comma-separated (cuda: resnet18,resnet50; cpu: tiny)")
    parser.add_argument(
        "--backends", help="comma-separated (cuda: torchscript,pt2; cpu: torchscript)"
    )
    parser.add_argument("--concurrency", help="ascending, comma-separated")
    parser.add_argument("--duration", type=float, help="seconds per point (cuda 3, cpu 1)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before a model's sweep")
    parser.add_argument("--raw-seconds", type=float, help="seconds per raw batch (cuda 1, cpu 0.3)")
    parser.add_argument("--slo-ms", type=float, default=15.0, help="p99 bound")
    parser.add_argument("--no-fp16", action="store_true", help="no fp16 autocast")
    parser.add_argument("--budget-s", type=float, default=270.0, help="skip what would not fit")
    parser.add_argument("--out", type=Path, help="the JSON file (default: $OUT/gpu_check.json)")
    parser.add_argument("--work-dir", type=Path, help="store and logs (default: beside --out)")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.models = _csv(args.models or ("resnet18,resnet50" if cuda else "tiny"))
    args.backends = _csv(args.backends or ("torchscript,pt2" if cuda else "torchscript"))
    if unknown := set(args.backends) - set(BACKENDS):
        parser.error(f"unknown backends {sorted(unknown)}; choose from {', '.join(BACKENDS)}")
    args.concurrency = [
        int(c) for c in _csv(args.concurrency or ("1,2,4,8,16,32,64,128" if cuda else "1,4"))
    ]
    args.duration = args.duration or (3.0 if cuda else 1.0)
    args.raw_seconds = args.raw_seconds or (1.0 if cuda else 0.3)
    args.fp16 = cuda and not args.no_fp16
    out_dir = Path(os.environ.get("OUT") or REPO / "loadtests" / "results")
    args.out = args.out or out_dir / "gpu_check.json"
    args.work_dir = args.work_dir or args.out.parent / f"gpu_check-{time.strftime('%Y%m%d-%H%M%S')}"
    return args


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def describe(device: str) -> dict[str, Any]:
    import platform

    import torch

    machine = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "cpu_cores": os.cpu_count(),
    }
    if device == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(0)
        machine["cuda"] = torch.version.cuda
    return machine


def prepare_store(args: argparse.Namespace, check: Check, store: Path) -> list[str]:
    """Each model's version under `store` (linked from --model-store or built); the names ready."""
    from loadtests.drive.catalog import ModelMissing, load_model
    from loadtests.systems.torch_store import BUILT, write_version
    from training.errors import TrainingError

    ready = []
    for name in args.models:
        try:
            found = (
                load_model(args.model_store.resolve(), name, "torchscript")
                if args.model_store
                else None
            )
        except ModelMissing:
            found = None
        try:
            if found is not None:
                link = store / name / found.version_dir.name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(found.version_dir.resolve(), target_is_directory=True)
                check.models[name] = {"source": f"store: {found.version_dir}"}
            elif name in BUILT:
                started = time.monotonic()
                try:
                    write_version(BUILT[name], store, args.device, pt2="pt2" in args.backends)
                except TrainingError as error:  # the .pt2 compile: keep the TorchScript file
                    check.skipped.append(f"{name} pt2: {error}")
                    write_version(BUILT[name], store, args.device, pt2=False)
                check.models[name] = {
                    "source": "torchvision, random weights" if name != "tiny" else "tiny CNN",
                    "build_s": round(time.monotonic() - started, 1),
                    **asdict(BUILT[name]),
                }
            else:
                check.skipped.append(f"{name}: not in the model store, and not one to build")
                continue
        except Exception as error:  # one model must not end the check
            check.skipped.append(f"{name}: {type(error).__name__}: {error}")
            continue
        log(f"model {name}: {check.models[name]['source']}")
        ready.append(name)
    return ready


def sweep(
    args: argparse.Namespace,
    check: Check,
    store: Path,
    names: list[str],
    backend: str,
    started: float,
) -> None:
    """One gateway on `backend` serving `names`; per model, points until p99 passes the SLO."""
    from loadtests.drive.catalog import ModelMissing, load_model
    from loadtests.drive.payloads import v2_binary
    from loadtests.drive.points import Load, measure_point
    from loadtests.systems import procs
    from loadtests.systems.deployment import Context
    from loadtests.systems.gateway import run_gateway
    from loadtests.systems.targets import v2_binary_request

    models = []
    for name in names:
        try:
            models.append(load_model(store, name, backend))
        except ModelMissing as error:
            check.skipped.append(f"{backend}: {error}")
    if not models:
        check.skipped.append(f"{backend}: no model has that artifact")
        return
    ctx = Context(store=store, models=models, work_dir=args.work_dir, device=args.device)
    load = Load(args.duration, args.warmup, http_engine="python")
    flags = ["--backend", backend, "--device", args.device]
    env = {"GATEWAY_FP16": str(args.fp16).lower()}
    with run_gateway(ctx, f"gateway-{backend}", flags, env, grpc=False) as (base, _grpc, info):
        log(f"gateway {backend}: ready in {info.cold_start_s:.1f} s")
        for model in models:
            run = Run(model.name, backend)
            check.runs.append(run)
            body = v2_binary(image_row(model.manifest), model.output_names)
            request = v2_binary_request(base, model.name, body)
            for index, concurrency in enumerate(args.concurrency):
                if over_budget(args, check, started, f"{backend}/{model.name} c={concurrency}"):
                    break
                point = measure_point(
                    f"gateway-{backend}",
                    model.name,
                    request,
                    concurrency,
                    load,
                    base,
                    warm_up=index == 0,
                )
                run.points.append(point.model_dump(mode="json", by_alias=True, exclude_none=True))
                if point.errors or point.latency_ms.p99 > args.slo_ms:
                    break  # more calls in flight only wait longer
            within = [
                p for p in run.points if not p["errors"] and p["latency_ms"]["p99"] <= args.slo_ms
            ]
            best = max(within, key=lambda p: p["throughput"], default=None)
            if best is not None:
                run.best = {
                    "concurrency": best["concurrency"],
                    "images_per_s": best["throughput"],
                    "p99_ms": best["latency_ms"]["p99"],
                    "formed_batch": formed_batch(best),
                }

        info.rss_loaded_mb = procs.tree_rss_mb(info.pid)
        check.servers[f"gateway-{backend}"] = asdict(info)


def formed_batch(point: dict[str, Any]) -> int | None:
    size = point.get("server_ms", {}).get("mean_batch_size")
    return max(1, round(size)) if size else None


def image_row(manifest: Any) -> dict[str, Any]:
    """One random uint8 image of the model's input shape (the same bytes for every request)."""
    import numpy as np

    spec = manifest.inputs[0]
    shape = [1, *spec.shape[1:]]
    return {spec.name: np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)}


def raw(args: argparse.Namespace, check: Check, store: Path, started: float) -> None:
    """Raw torch at batch 1 and at every batch size the gateway formed, per run."""
    from loadtests.drive.catalog import load_model
    from loadtests.systems import raw_torch

    for run in check.runs:
        if over_budget(args, check, started, f"raw {run.backend}/{run.model}"):
            return
        batches = sorted({1, *(b for p in run.points if (b := formed_batch(p)))})
        try:
            model = load_model(store, run.model, run.backend)
            module = raw_torch.open_module(model.version_dir, run.backend, args.device)
            points = raw_torch.measure(
                module,
                model.manifest,
                image_row(model.manifest),
                batches,
                args.raw_seconds,
                args.device,
                fp16=args.fp16,
            )
        except Exception as error:
            run.error = f"raw torch: {type(error).__name__}: {error}"
            continue
        run.raw = [asdict(p) for p in points]
        same = next((p for p in points if run.best and p.batch == run.best["formed_batch"]), None)
        if run.best and same:
            run.best_vs_raw = round(run.best["images_per_s"] / same.items_per_s, 3)
        log(
            f"raw {run.backend}/{run.model}: "
            + ", ".join(f"batch {p.batch} {p.items_per_s:.0f}/s" for p in points)
        )


def over_budget(args: argparse.Namespace, check: Check, started: float, what: str) -> bool:
    if time.monotonic() - started <= args.budget_s:
        return False
    check.skipped.append(f"{what}: over the {args.budget_s:.0f} s budget")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    store = args.work_dir / "store"
    check = Check(
        machine=describe(args.device),
        config={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        missing=[m for m in GATEWAY_MODULES if importlib.util.find_spec(m) is None],
    )
    names = prepare_store(args, check, store)
    for backend in args.backends:
        if check.missing:
            check.skipped.append(f"gateway {backend}: missing {', '.join(check.missing)}")
            check.runs += [Run(name, backend) for name in names]
            continue
        try:
            sweep(args, check, store, names, backend, started)
        except Exception as error:  # one backend failing must not lose the other's figures
            log(f"gateway {backend} failed: {error}")
            check.skipped.append(f"gateway {backend}: {type(error).__name__}: {error}")
    raw(args, check, store, started)
    check.wall_s = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(asdict(check), indent=1) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
