"""TorchServe as a system under test: TorchServe direct, our gateway's `torchserve` backend in
front of a second TorchServe, and its `torchserve-native` backend on the same archives."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from loadtests.systems import procs
from loadtests.systems.deployment import Context, Deployment, ServerInfo, Unavailable
from loadtests.systems.gateway import run_gateway
from loadtests.systems.targets import predictions_request, v2_requests


@contextmanager
def torchserve(ctx: Context) -> Iterator[Deployment]:
    """TorchServe with the project's handlers, and the gateway's `torchserve` backend over it."""
    try:
        import deploy.torchserve.launcher  # noqa: F401
        from deploy.torchserve.archive import build_archives
    except ImportError as error:
        raise Unavailable(
            f"deploy.torchserve.archive / deploy.torchserve.launcher not importable yet ({error})"
        ) from None
    archives = ctx.work_dir / "torchserve-archives"
    archives.mkdir(parents=True, exist_ok=True)
    build_archives(ctx.store, archives, ctx.model_names)
    batch_size = max(m.max_batch_size for m in ctx.models)
    direct_settings = f"1 worker per model, batch_size={batch_size}, max_batch_delay=5 ms"
    with ExitStack() as stack:
        # TorchServe users get TorchServe's own batcher. Behind the gateway, TorchServe runs as
        # `BACKEND=torchserve make run` deploys it: batch_size 1, since each request it gets is
        # a whole gateway batch (its batcher would only add max_batch_delay to every batch).
        direct, direct_info = _start_torchserve(
            ctx, stack, archives, "torchserve", direct_settings, batch_size=batch_size
        )
        behind, behind_info = _start_torchserve(
            ctx,
            stack,
            archives,
            "torchserve-behind-gateway",
            "1 worker per model, batch_size=1 (the gateway in front batches)",
            batch_size=1,
        )
        env = {"GATEWAY_TORCHSERVE_URL": str(behind.inference_url).rstrip("/")}
        if behind.token:
            env["GATEWAY_TORCHSERVE_TOKEN"] = str(behind.token)
        gateway_base, _grpc, gateway_info = stack.enter_context(
            run_gateway(ctx, "gateway-torchserve", ["--backend", "torchserve"], env)
        )
        native_base, _grpc, native_info = stack.enter_context(
            _native_gateway(ctx, archives, batch_size)
        )
        base = str(direct.inference_url).rstrip("/")
        yield Deployment(
            servers=[direct_info, behind_info, gateway_info, native_info],
            targets={
                "torchserve": {
                    m.name: predictions_request(base, m, direct.token) for m in ctx.models
                },
                "gateway-torchserve-v2-json": {
                    m.name: v2_requests(gateway_base, m, binary=False) for m in ctx.models
                },
                "gateway-native-mar": {
                    m.name: predictions_request(native_base, m) for m in ctx.models
                },
            },
            metrics={
                "gateway-torchserve-v2-json": gateway_base,
                "gateway-native-mar": native_base,
            },
            processes={
                "torchserve": [direct_info.pid],
                # The gateway and the TorchServe it forwards to: both work for each request.
                "gateway-torchserve-v2-json": [gateway_info.pid, behind_info.pid],
                "gateway-native-mar": [native_info.pid],
            },
        )


@contextmanager
def _native_gateway(
    ctx: Context, archives: Path, batch_size: int
) -> Iterator[tuple[str, str, ServerInfo]]:
    """The gateway's `torchserve-native` backend on the very archives TorchServe direct
    serves, with its batch settings (1 worker, the same batchSize; no batch window)."""
    from deploy.torchserve.launcher import copy_with_batching

    store = ctx.work_dir / "native-archives"
    store.mkdir(parents=True, exist_ok=True)
    settings = {"batchSize": batch_size, "minWorkers": 1, "maxWorkers": 1}
    for name in ctx.model_names:
        copy_with_batching(archives / f"{name}.mar", store / f"{name}.mar", settings)
    args = ["--backend", "torchserve-native", "--torchserve-model-store", str(store)]
    with run_gateway(ctx, "gateway-native-mar", args) as (base, grpc, info):
        info.settings = (
            f"{info.settings}; archives of `torchserve`, batchSize {batch_size}, 1 worker "
            "process per model running the archive's handler"
        )
        yield base, grpc, info


def _start_torchserve(
    ctx: Context,
    stack: ExitStack,
    archives: Path,
    name: str,
    settings: str,
    *,
    batch_size: int,
) -> tuple[Any, ServerInfo]:
    """One TorchServe on free ports inside `stack`, with its cold start and RSS once ready."""
    from deploy.torchserve.launcher import DEFAULT_CONFIG, start_torchserve

    # The launcher picks free HTTP ports but leaves gRPC on 7070/7071, which another TorchServe
    # on this machine may hold: give gRPC free ports too.
    config = ctx.work_dir / f"{name}.properties"
    config.write_text(
        Path(DEFAULT_CONFIG).read_text()
        + f"\ngrpc_inference_port={procs.free_port()}\ngrpc_management_port={procs.free_port()}\n"
    )
    started = time.monotonic()
    served = stack.enter_context(
        start_torchserve(
            archives,
            ctx.work_dir / name,
            ctx.model_names,
            batch_size=batch_size,
            max_batch_delay_ms=5,
            workers=1,
            config=config,
        )
    )
    info = ServerInfo(name, served.process.pid, time.monotonic() - started, settings)
    info.rss_ready_mb = procs.tree_rss_mb(served.process.pid)
    return served, info
