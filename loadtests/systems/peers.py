"""Peer servers, each in its own venv, serving the same ONNX files with ONNX Runtime."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from loadtests.systems import procs
from loadtests.systems.deployment import Context, Deployment, ServerInfo, Unavailable
from loadtests.systems.peer_venvs import PeerUnavailable, ensure_peer, python_lib_dir
from loadtests.systems.targets import grpc_request, ready_urls, v2_requests

SCRIPTS = Path(__file__).resolve().parent / "peer_servers"


def _peer_python(ctx: Context, name: str) -> Path:
    try:
        return ensure_peer(
            name, install=ctx.install, device=ctx.device, log=ctx.work_dir / f"install-{name}.log"
        )
    except PeerUnavailable as error:
        raise Unavailable(str(error)) from None


@contextmanager
def _serve(
    ctx: Context,
    label: str,
    command: Sequence[str],
    env: dict[str, str],
    base: str,
    settings: str,
    stop_timeout_s: float = 10.0,
    ready: Sequence[str] | None = None,
) -> Iterator[ServerInfo]:
    """Start a peer and wait for `ready` (default: the V2 health URLs of every model)."""
    started = time.monotonic()
    process = procs.spawn(
        command, ctx.work_dir / f"{label}.log", {"PEER_DEVICE": ctx.device, **env}, cwd=ctx.work_dir
    )
    try:
        urls = ready_urls(base, ctx.models) if ready is None else ready
        procs.wait_ready(urls, process, ctx.startup_timeout_s)
        info = ServerInfo(label, process.pid, time.monotonic() - started, settings)
        info.rss_ready_mb = procs.tree_rss_mb(process.pid)
        yield info
    finally:
        procs.stop(process, stop_timeout_s)


@contextmanager
def pytriton(ctx: Context) -> Iterator[Deployment]:
    python = _peer_python(ctx, "pytriton")
    http, grpc, metrics = procs.free_port(), procs.free_port(), procs.free_port()
    command = [
        str(python),
        str(SCRIPTS / "pytriton_server.py"),
        "--store",
        str(ctx.store),
        "--models",
        ",".join(ctx.model_names),
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
        "--device",
        ctx.device,
    ]
    # The bundled Triton's Python backend stub must load this interpreter's libpython.
    library_path = os.pathsep.join(
        p for p in (python_lib_dir(), os.environ.get("LD_LIBRARY_PATH")) if p
    )
    base = f"http://127.0.0.1:{http}"
    settings = (
        "Triton dynamic batcher, max_batch_size from the manifest, "
        "max_queue_delay 0 µs; @batch Python function calling ONNX Runtime"
    )
    with _serve(
        ctx, "pytriton", command, {"LD_LIBRARY_PATH": library_path}, base, settings
    ) as info:
        yield Deployment(
            [info],
            {
                "pytriton-v2-json": {
                    m.name: v2_requests(base, m, binary=False) for m in ctx.models
                },
                "pytriton-v2-binary": {
                    m.name: v2_requests(base, m, binary=True) for m in ctx.models
                },
                # Triton's own gRPC front end (C++), same ModelInferRequest as the gateway's.
                "pytriton-v2-grpc": {
                    m.name: grpc_request(f"127.0.0.1:{grpc}", m) for m in ctx.models
                },
            },
        )


@contextmanager
def kserve(ctx: Context) -> Iterator[Deployment]:
    python = _peer_python(ctx, "kserve")
    port = procs.free_port()
    env = {
        "PEER_STORE": str(ctx.store),
        "PEER_MODELS": ",".join(ctx.model_names),
        "PEER_HTTP_PORT": str(port),
    }
    base = f"http://127.0.0.1:{port}"
    settings = (
        "ModelServer, 1 worker, no batching, access/trace logs off; predict() calls ONNX Runtime"
    )
    with _serve(
        ctx,
        "kserve",
        [str(python), str(SCRIPTS / "kserve_server.py")],
        env,
        base,
        settings,
        stop_timeout_s=5.0,
    ) as info:
        yield Deployment(
            [info],
            {
                "kserve-v2-json": {m.name: v2_requests(base, m, binary=False) for m in ctx.models},
            },
        )


MLSERVER_BATCH_TIME_S = 0.001
MLSERVER_WORKERS = 1


def write_mlserver_repository(ctx: Context, directory: Path, ports: tuple[int, int, int]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    http, grpc, metrics = ports
    (directory / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": http,
                "grpc_port": grpc,
                "metrics_port": metrics,
                "parallel_workers": MLSERVER_WORKERS,
                "debug": False,
            }
        )
    )
    for model in ctx.models:
        (directory / model.name).mkdir(exist_ok=True)
        (directory / model.name / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": model.name,
                    "implementation": "mlserver_runtime.OnnxRuntimeModel",
                    "parameters": {"uri": str(model.version_dir)},
                    "max_batch_size": model.max_batch_size,
                    "max_batch_time": MLSERVER_BATCH_TIME_S,
                }
            )
        )


@contextmanager
def mlserver(ctx: Context) -> Iterator[Deployment]:
    python = _peer_python(ctx, "mlserver")
    ports = (procs.free_port(), procs.free_port(), procs.free_port())
    repository = ctx.work_dir / "mlserver-repository"
    write_mlserver_repository(ctx, repository, ports)
    base = f"http://127.0.0.1:{ports[0]}"
    settings = (
        f"{MLSERVER_WORKERS} parallel worker, adaptive batching up to the manifest's "
        f"max_batch_size, max_batch_time {MLSERVER_BATCH_TIME_S * 1000:g} ms"
    )
    command = [str(python.parent / "mlserver"), "start", str(repository)]
    with _serve(ctx, "mlserver", command, {"PYTHONPATH": str(SCRIPTS)}, base, settings) as info:
        yield Deployment(
            [info],
            {
                "mlserver-v2-json": {
                    m.name: v2_requests(base, m, binary=False) for m in ctx.models
                },
            },
        )


LITSERVE_BATCH_TIMEOUT_MS = 1.0
"""LitServe waits this long for a batch to fill, every batch (its loop has no 'run now when
idle'). 0 would not wait, but its worker then polls the queue without sleeping and takes a
whole core from the server's own HTTP process on this 2-core machine. 1 ms is MLServer's
max_batch_time here too."""


@contextmanager
def litserve(ctx: Context) -> Iterator[Deployment]:
    """LitServe: one `LitAPI` per model at the V2 infer path, LitServe's batching."""
    python = _peer_python(ctx, "litserve")
    port = procs.free_port()
    command = [
        str(python),
        str(SCRIPTS / "litserve_server.py"),
        "--store",
        str(ctx.store),
        "--models",
        ",".join(ctx.model_names),
        "--port",
        str(port),
        "--batch-timeout-ms",
        f"{LITSERVE_BATCH_TIMEOUT_MS:g}",
        "--device",
        ctx.device,
    ]
    base = f"http://127.0.0.1:{port}"
    settings = (
        "LitServer, 1 inference worker per model, 1 API server process; max_batch_size from "
        f"the manifest, batch_timeout {LITSERVE_BATCH_TIMEOUT_MS:g} ms; predict() calls "
        "ONNX Runtime"
    )
    with _serve(
        ctx, "litserve", command, {}, base, settings, stop_timeout_s=5.0, ready=[f"{base}/health"]
    ) as info:
        yield Deployment(
            [info],
            {"litserve-v2-json": {m.name: v2_requests(base, m, binary=False) for m in ctx.models}},
        )
