"""A picture of a real trace: concurrent requests to one model, the batches that served them.

    python -m loadtests.trace_picture --model minilm --requests 12 --out docs/images/trace_batches.png

Starts `python -m service` with tracing on, exporting to an OTLP/HTTP sink on 127.0.0.1
(`loadtests.systems.otlp_sink`), sends `--requests` concurrent requests (the first with a known
`traceparent`, as a caller continuing its own trace would), waits for the spans and draws each
request's decode / queue / encode, and each batch with lines to the requests it served (the
span links). The figure in docs/tracing.md comes from this script.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import orjson

from loadtests.systems import procs
from loadtests.systems.otlp_sink import OtlpSink, ReceivedSpan

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TEXTS = [
    "serving models is fun",
    "dynamic batching groups concurrent requests into one model call",
    "a longer sentence pads every shorter one in its batch to its own length, which costs compute",
    "short",
]


def body_for(model: str, index: int) -> bytes:
    if model in ("minilm", "txt"):
        data = [TEXTS[index % len(TEXTS)]]
        inputs = [{"name": "text", "datatype": "BYTES", "shape": [1], "data": data}]
    else:
        inputs = [
            {"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    return orjson.dumps({"inputs": inputs})


async def send(base: str, model: str, count: int) -> list[int]:
    async with aiohttp.ClientSession() as session:

        async def one(index: int) -> int:
            headers = {"Content-Type": "application/json"}
            if index == 0:
                headers["traceparent"] = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
            url = f"{base}/v2/models/{model}/infer"
            async with session.post(url, data=body_for(model, index), headers=headers) as answer:
                await answer.read()
                return answer.status

        return await asyncio.gather(*(one(i) for i in range(count)))


def collect(store: Path, model: str, count: int, work_dir: Path) -> list[ReceivedSpan]:
    with OtlpSink() as sink:
        port, grpc_port = procs.free_port(), procs.free_port()
        env = {
            "GATEWAY_TRACING": "true",
            "GATEWAY_OTLP_ENDPOINT": sink.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        command = [sys.executable, "-m", "service", "--model-store", str(store)]
        command += ["--port", str(port), "--grpc-port", str(grpc_port), "--models", model]
        process = procs.spawn(command, work_dir / "gateway.log", env)
        base = f"http://127.0.0.1:{port}"
        try:
            procs.wait_ready([f"{base}/v2/models/{model}/ready"], process, 120)
            statuses = asyncio.run(send(base, model, count))
            if set(statuses) != {200}:
                raise RuntimeError(f"requests answered {statuses}")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                spans = sink.received()
                if sum(span.name.startswith("infer ") for span in spans) >= count:
                    time.sleep(0.3)  # the last batch's spans follow
                    break
                time.sleep(0.05)
        finally:
            procs.stop(process)
        return sink.received()


def draw(spans: Sequence[ReceivedSpan], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    requests = sorted((s for s in spans if s.name.startswith("infer ")), key=lambda s: s.start_ns)
    batches = sorted((s for s in spans if s.name == "batch"), key=lambda s: s.start_ns)
    origin = min(s.start_ns for s in requests)

    def ms(ns: int) -> float:
        return (ns - origin) / 1e6

    colors = {"decode": "#4c72b0", "queue": "#dd8452", "encode": "#55a868", "batch": "#c44e52"}
    rows = len(requests) + len(batches)
    figure, axes = plt.subplots(figsize=(10, 0.42 * rows + 1.6))
    y_of: dict[str, int] = {}
    for row, request in enumerate(requests):
        y_of[request.span_id] = row
        axes.barh(
            row,
            ms(request.end_ns) - ms(request.start_ns),
            left=ms(request.start_ns),
            height=0.7,
            color="#dddddd",
            edgecolor="#999999",
        )
        for child in spans:
            if child.parent_span_id == request.span_id and child.name in colors:
                if child.name == "batch":
                    continue
                axes.barh(
                    row,
                    ms(child.end_ns) - ms(child.start_ns),
                    left=ms(child.start_ns),
                    height=0.45,
                    color=colors[child.name],
                )
        label = "caller's trace" if request.trace_id == CALLER_TRACE else f"request {row + 1}"
        axes.text(ms(request.end_ns) + 0.05, row, label, va="center", fontsize=7)
    for index, batch in enumerate(batches):
        row = len(requests) + index
        axes.barh(
            row,
            ms(batch.end_ns) - ms(batch.start_ns),
            left=ms(batch.start_ns),
            height=0.7,
            color=colors["batch"],
        )
        rows_in = batch.attributes.get("gateway.batch_rows")
        backend = batch.attributes.get("gateway.backend_ms")
        axes.text(
            ms(batch.end_ns) + 0.05,
            row,
            f"batch: {rows_in} rows, backend {backend} ms",
            va="center",
            fontsize=7,
        )
        for _trace, span_id in batch.links:
            if span_id in y_of:
                axes.plot(
                    [ms(batch.start_ns)] * 2,
                    [row, y_of[span_id]],
                    color=colors["batch"],
                    linewidth=0.6,
                    alpha=0.6,
                )
    axes.set_yticks([])
    axes.invert_yaxis()
    axes.set_xlabel("ms since the first request arrived")
    from matplotlib.patches import Patch

    names = ["decode", "queue", "encode", "batch (lines: its links)"]
    handles = [
        Patch(color=color, label=name) for color, name in zip(colors.values(), names, strict=True)
    ]
    axes.legend(handles=handles, loc="upper right", fontsize=7)
    axes.set_xlim(0, ms(max(s.end_ns for s in [*requests, *batches])) * 1.3)
    axes.set_title(
        f"{len(requests)} concurrent requests, {len(batches)} batches (one real trace export)"
    )
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=130)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.trace_picture", description=__doc__)
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("docs/images/trace_batches.png"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        spans = collect(args.model_store, args.model, args.requests, Path(work))
    draw(spans, args.out)
    batches = [s for s in spans if s.name == "batch"]
    print(f"{len(spans)} spans, {len(batches)} batches -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
