"""`python -m loadtests.inprocess`: the gateway's ASGI app driven in this process, no network.

    python -m loadtests.inprocess --model-store model_store --model digits \\
        --protocol predictions --concurrency 32 --requests 16000 [--profile 30]

Builds the app from settings as `python -m service` does (the store, one model, optionally the
`torchserve-native` backend), runs its lifespan, waits until the model is ready, then keeps
`--concurrency` requests in flight through the ASGI interface until `--requests` have been
answered, each checked to be a 200. Prints the CPU of this process per request (the gateway:
its event loop and its compute threads) and that of its child processes (the native runtime's
handler workers). Without uvicorn, sockets and a load generator on the same cores, a change of
a few microseconds shows above the noise that hides it in a network run (`loadtests.cpu_ab`);
`--profile N` prints cProfile's N most expensive functions (cProfile inflates small calls).

A/B of two source trees: run it from each (`PYTHONPATH=<tree>`, rounds interleaved).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message

from loadtests.drive.catalog import BenchModel, load_model
from loadtests.drive.wrk import Request
from loadtests.systems import procs
from loadtests.systems.targets import predictions_request, v2_requests

PROTOCOLS = ("rest", "predictions")
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Figures:
    requests: int
    seconds: float
    gateway_cpu_s: float
    children_cpu_s: float

    @property
    def gateway_us(self) -> float:
        return self.gateway_cpu_s / self.requests * 1e6

    @property
    def children_us(self) -> float:
        return self.children_cpu_s / self.requests * 1e6

    def line(self) -> str:
        return (
            f"{self.requests} requests in {self.seconds:.2f} s: gateway {self.gateway_us:.1f} "
            f"µs CPU/request, child processes {self.children_us:.1f} µs CPU/request"
        )


def target_for(protocol: str, model: BenchModel) -> Request:
    """The benchmark's own request for `protocol` (`loadtests.systems.targets`), its URL the
    bare path: V2 JSON (`rest`) or TorchServe's `/predictions` with the model's native body."""
    if protocol == "rest":
        return v2_requests("", model, binary=False)
    return predictions_request("", model)


async def call(app: ASGIApp, target: Request) -> tuple[int, bytes]:
    """One request through the ASGI interface: (status, body). The client stays connected
    until the answer is complete, as a live one does."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": target.url,
        "raw_path": target.url.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-length", str(len(target.body)).encode()),
            *(
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in target.headers.items()
            ),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent_body = False
    answered = asyncio.Event()
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": target.body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                answered.set()

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def drive(app: ASGIApp, target: Request, concurrency: int, requests: int) -> None:
    left = requests

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status, body = await call(app, target)
            if status != 200:
                raise RuntimeError(f"{target.url} answered {status}: {body[:300]!r}")

    await asyncio.gather(*(client() for _ in range(concurrency)))


class Lifespan:
    """The app's lifespan protocol: start-up on enter, shutdown on exit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._incoming: asyncio.Queue[Message] = asyncio.Queue()
        self._outgoing: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Lifespan:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.create_task(
            self.app(scope, self._incoming.get, self._outgoing.put)  # type: ignore[arg-type]
        )
        await self._incoming.put({"type": "lifespan.startup"})
        answer = await self._outgoing.get()
        if answer["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"start-up failed: {answer.get('message', answer)}")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._incoming.put({"type": "lifespan.shutdown"})
        await self._outgoing.get()
        assert self._task is not None
        await self._task


async def wait_ready(plane: Any, name: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if plane.started and plane.model_ready(name, None, None).ready:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"model {name} not ready within {READY_TIMEOUT_S:g} s")


async def measure(
    store: Path,
    model: str,
    protocol: str,
    *,
    concurrency: int,
    requests: int,
    warmup: int,
    native: bool,
    profile: cProfile.Profile | None = None,
) -> Figures:
    """Serve `model` from `store` in this process and time `requests` requests."""
    from service.app import create_app
    from service.server import settle_gc
    from service.settings import Settings

    backend: dict[str, Any] = (
        {"backend": "torchserve-native", "torchserve_model_store": store} if native else {}
    )
    settings = Settings(model_store=store, models=[model], grpc_enabled=False, **backend)
    app = create_app(settings)
    target = target_for(protocol, load_model(store, model))
    async with Lifespan(app):
        await wait_ready(app.state.dataplane, model)
        await drive(app, target, concurrency, warmup)
        settle_gc()  # as the server does once its models are loaded
        me = os.getpid()
        before_all, before_own = procs.tree_cpu_s([me]), time.process_time()
        started = time.perf_counter()
        if profile is not None:
            profile.enable()
        await drive(app, target, concurrency, requests)
        if profile is not None:
            profile.disable()
        seconds = time.perf_counter() - started
        own = time.process_time() - before_own
        everything = procs.tree_cpu_s([me]) - before_all
    return Figures(requests, seconds, own, max(everything - own, 0.0))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--model", default="iris")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="rest")
    parser.add_argument("--native", action="store_true", help="the torchserve-native backend")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=16_000)
    parser.add_argument("--warmup", type=int, default=3_200)
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.requests < 1 or args.warmup < 0:
        parser.error("--concurrency and --requests must be >= 1, --warmup >= 0")
    import uvloop

    profile = cProfile.Profile() if args.profile else None
    figures = uvloop.run(
        measure(
            args.model_store.resolve(),
            args.model,
            args.protocol,
            concurrency=args.concurrency,
            requests=args.requests,
            warmup=args.warmup,
            native=args.native,
            profile=profile,
        )
    )
    print(figures.line())
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.profile)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
