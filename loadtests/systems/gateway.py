"""Our gateway as a system under test: `python -m service` on free ports, and its variants (two
workers, the TorchScript backend on CUDA)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from loadtests.drive.grpc_load.probe import wait_serving
from loadtests.systems import procs
from loadtests.systems.deployment import Context, Deployment, ServerInfo, Unavailable
from loadtests.systems.targets import grpc_request, predictions_request, ready_urls, v2_requests

GPU_PROVIDERS = "TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider"


GRPC_READY_TIMEOUT_S = 10.0
"""After HTTP readiness, how long the gateway's gRPC health service gets to say SERVING."""


def gateway_command(
    store: Path, port: int, grpc_port: int, models: Sequence[str], extra: Sequence[str] = ()
) -> list[str]:
    """`python -m service` serving `models` of `store` on these ports."""
    return [
        sys.executable,
        "-m",
        "service",
        "--model-store",
        str(store),
        "--port",
        str(port),
        "--grpc-port",
        str(grpc_port),
        "--models",
        ",".join(models),
        *extra,
    ]


@contextmanager
def run_gateway(
    ctx: Context,
    label: str,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    *,
    grpc: bool = True,
) -> Iterator[tuple[str, str, ServerInfo]]:
    """`python -m service` on free HTTP and gRPC ports (never the default 8001, so servers
    started side by side never clash); yields its base URL and gRPC target once every model is
    ready. `grpc=False`: gRPC off (where grpcio is not installed), its target unused."""
    port, grpc_port = procs.free_port(), procs.free_port()
    args = list(extra_args)
    if ctx.device == "cuda" and "--backend" not in extra_args:
        args += ["--providers", GPU_PROVIDERS]
    if not grpc:
        env = {**(env or {}), "GATEWAY_GRPC_ENABLED": "false"}
    started = time.monotonic()
    command = gateway_command(ctx.store, port, grpc_port, ctx.model_names, args)
    process = procs.spawn(command, ctx.work_dir / f"{label}.log", env)
    try:
        base, grpc_target = f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"
        procs.wait_ready(ready_urls(base, ctx.models), process, ctx.startup_timeout_s)
        try:
            if grpc:
                wait_serving(grpc_target, GRPC_READY_TIMEOUT_S, process)
        except TimeoutError as error:  # its gRPC systems then fail their check, and say so
            print(f"[bench] {label}: {error}", flush=True)
        info = ServerInfo(
            label,
            process.pid,
            time.monotonic() - started,
            " ".join(["python -m service", *extra_args])
            + " (defaults otherwise: batches up to the manifest's max_batch_size, "
            "no queue delay, 1 instance per model)",
        )
        info.rss_ready_mb = procs.tree_rss_mb(process.pid)
        yield base, grpc_target, info
    finally:
        procs.stop(process)


GATEWAY_SYSTEMS = ("gateway-v2-json", "gateway-v2-binary", "gateway-predictions", "gateway-v2-grpc")


@contextmanager
def gateway(ctx: Context) -> Iterator[Deployment]:
    with run_gateway(ctx, "gateway") as (base, grpc, info):
        yield Deployment(
            servers=[info],
            targets={
                "gateway-v2-json": {m.name: v2_requests(base, m, binary=False) for m in ctx.models},
                "gateway-v2-binary": {
                    m.name: v2_requests(base, m, binary=True) for m in ctx.models
                },
                "gateway-predictions": {m.name: predictions_request(base, m) for m in ctx.models},
                "gateway-v2-grpc": {m.name: grpc_request(grpc, m) for m in ctx.models},
            },
            metrics=dict.fromkeys(GATEWAY_SYSTEMS, base),
        )


GATEWAY_WORKERS = 2


def workers_setting() -> str | None:
    """Why the gateway cannot run several workers, or None when its settings have `workers`
    (`GATEWAY_WORKERS`). The settings ignore unknown variables, so without the field the
    variable would silently give one worker measured under the wrong name."""
    from service.settings import Settings

    if "workers" not in Settings.model_fields:
        return "the gateway has no GATEWAY_WORKERS setting (service.settings.Settings.workers)"
    return None


@contextmanager
def gateway_workers(ctx: Context) -> Iterator[Deployment]:
    """The same gateway with `GATEWAY_WORKERS=2`: serving processes sharing its ports."""
    problem = workers_setting()
    if problem is not None:
        raise Unavailable(problem)
    env = {"GATEWAY_WORKERS": str(GATEWAY_WORKERS)}
    with run_gateway(ctx, "gateway-2workers", (), env) as (base, _grpc, info):
        info.settings = f"GATEWAY_WORKERS={GATEWAY_WORKERS} " + info.settings
        yield Deployment(
            [info],
            {
                "gateway-2workers-v2-json": {
                    m.name: v2_requests(base, m, binary=False) for m in ctx.models
                }
            },
            # One scrape sums the workers (the gateway's multiprocess metrics).
            {"gateway-2workers-v2-json": base},
        )


@contextmanager
def gateway_torchscript(ctx: Context) -> Iterator[Deployment]:
    """GPU only: the gateway's TorchScript backend on CUDA, fp16 autocast."""
    if ctx.device != "cuda":
        raise Unavailable("gateway-torchscript runs only with --device cuda")
    args = ["--backend", "torchscript", "--device", "cuda"]
    with run_gateway(ctx, "gateway-torchscript", args, {"GATEWAY_FP16": "true"}) as (
        base,
        _grpc,
        info,
    ):
        yield Deployment(
            [info],
            {
                "gateway-torchscript-v2-binary": {
                    m.name: v2_requests(base, m, binary=True) for m in ctx.models
                }
            },
            {"gateway-torchscript-v2-binary": base},
        )
