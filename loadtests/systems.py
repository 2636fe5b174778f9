"""Systems under test: how each server is started, and the request each system gets per model.

A *server* is one set of processes (the gateway, TorchServe, a peer); it may expose several
*systems* (the gateway's V2 JSON, V2 binary and `/predictions` routes). Every server is a context
manager yielding a `Deployment`; leaving it stops every process it started.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests import grpc_load, procs
from loadtests.catalog import BenchModel
from loadtests.grpc_load import GrpcRequest
from loadtests.wrk import Request

Target = Request | GrpcRequest
"""What a system is loaded with: an HTTP request (wrk) or a gRPC call (grpc_load)."""

GPU_PROVIDERS = "TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider"


class Unavailable(RuntimeError):
    """The server cannot run here (not installed, a dependency missing); the reason says why."""


@dataclass(frozen=True)
class Context:
    store: Path
    models: Sequence[BenchModel]
    work_dir: Path
    """Logs and generated configuration go here."""
    device: str = "cpu"
    install: bool = True
    """Create missing peer venvs (network); when False, missing peers are skipped."""
    startup_timeout_s: float = 300.0

    @property
    def model_names(self) -> list[str]:
        return [model.name for model in self.models]


@dataclass
class ServerInfo:
    name: str
    pid: int
    cold_start_s: float
    """Process start to every model ready."""
    settings: str
    rss_ready_mb: float = 0.0
    rss_loaded_mb: float = 0.0
    """Resident memory of the process tree once ready, and right after its load sweep."""


@dataclass
class Deployment:
    servers: list[ServerInfo] = field(default_factory=list)
    targets: dict[str, dict[str, Target]] = field(default_factory=dict)
    """system -> model -> the request wrk posts, or the call grpc_load makes."""
    metrics: dict[str, str] = field(default_factory=dict)
    """system -> base URL of a gateway whose /metrics splits its time (our systems only)."""


@dataclass(frozen=True)
class ServerKind:
    name: str
    systems: tuple[str, ...]
    start: Callable[[Context], AbstractContextManager[Deployment]]


def v2_requests(base: str, model: BenchModel, *, binary: bool) -> Request:
    url = f"{base}/v2/models/{model.name}/infer"
    if not binary:
        return Request(url, model.v2_json, {"Content-Type": "application/json"})
    body, header_length = model.v2_binary
    return Request(
        url,
        body,
        {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_length),
        },
    )


def grpc_request(target: str, model: BenchModel) -> GrpcRequest:
    """ModelInfer with the same tensors as the V2 binary body, as raw_input_contents."""
    return GrpcRequest(target, model.v2_grpc)


def predictions_request(base: str, model: BenchModel, token: str | None = None) -> Request:
    body, content_type = model.native
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return Request(f"{base}/predictions/{model.name}", body, headers)


def ready_urls(base: str, models: Sequence[BenchModel]) -> list[str]:
    return [f"{base}/v2/health/ready", *(f"{base}/v2/models/{m.name}/ready" for m in models)]


GRPC_READY_TIMEOUT_S = 10.0
"""After HTTP readiness, how long the gateway's gRPC health service gets to say SERVING."""


@contextmanager
def run_gateway(
    ctx: Context, label: str, extra_args: Sequence[str] = (), env: dict[str, str] | None = None
) -> Iterator[tuple[str, str, ServerInfo]]:
    """`python -m service` on free HTTP and gRPC ports (never the default 8001, so servers
    started side by side never clash); yields its base URL and gRPC target once every model is
    ready."""
    port, grpc_port = procs.free_port(), procs.free_port()
    args = [
        "--model-store",
        str(ctx.store),
        "--port",
        str(port),
        "--grpc-port",
        str(grpc_port),
        "--models",
        ",".join(ctx.model_names),
        *extra_args,
    ]
    if ctx.device == "cuda" and "--backend" not in extra_args:
        args += ["--providers", GPU_PROVIDERS]
    started = time.monotonic()
    process = procs.spawn(
        [sys.executable, "-m", "service", *args], ctx.work_dir / f"{label}.log", env
    )
    try:
        base, grpc = f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"
        procs.wait_ready(ready_urls(base, ctx.models), process, ctx.startup_timeout_s)
        try:
            grpc_load.wait_serving(grpc, GRPC_READY_TIMEOUT_S, process)
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
        yield base, grpc, info
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
