"""The report's tables of figures: per model, the raw call, the gateway's own split, throughput
against the raw limit, and each server's cold start and memory."""

from __future__ import annotations

from loadtests.reporting.lookup import (
    backend_ratio,
    best_point,
    best_within_slo,
    models_of,
    paced_raw,
    point_at,
    points_of,
    raw_at_formed,
    systems_of,
)
from loadtests.reporting.records import RawModel, Results
from loadtests.reporting.text import ABSENT, ms, num


def model_table(results: Results, model: str) -> list[str]:
    concurrency = results.config.concurrency
    slo = results.config.slo_p99_ms
    header = (
        "| System | "
        + " | ".join(f"c={c}" for c in concurrency)
        + f" | Best with p99 ≤ {slo:g} ms |"
    )
    lines = [header, "|---|" + "---:|" * (len(concurrency) + 1)]
    for system in systems_of(results):
        if not points_of(results, system, model):
            continue
        cells = []
        for c in concurrency:
            point = point_at(results, system, model, c)
            if point is None:
                cells.append(ABSENT)
                continue
            cell = (
                f"{num(point.throughput)} ({ms(point.latency_ms.p50)} / {ms(point.latency_ms.p99)})"
            )
            if point.errors:
                cell += f" ⚠ {point.errors} errors"
            cells.append(cell)
        best = best_within_slo(results, system, model, slo)
        best_cell = f"{num(best.throughput)} at c={best.concurrency}" if best else ABSENT
        lines.append(f"| `{system}` | " + " | ".join(cells) + f" | {best_cell} |")
    raw = results.raw.get(model)
    if raw:
        lines.append(
            f"| raw ORT limit | {num(raw.limit_items_per_s)} items/s at batch "
            f"{raw.limit_batch}" + " |" * len(concurrency) + " |"
        )
    return lines


def raw_table(results: Results) -> list[str]:
    """Every batch size measured: the configured ones, then those the gateway formed."""
    batches = sorted(
        {*results.config.raw_batches, *(p.batch for r in results.raw.values() for p in r.batches)}
    )
    paced = paced_raw(results)
    lines = [
        "| Model | "
        + " | ".join(f"batch {b}" for b in batches)
        + (" | batch 1, paced: p50 (idle before each call) |" if paced else " |"),
        "|---|" + "---:|" * (len(batches) + paced),
    ]
    for model, raw in results.raw.items():
        cells = []
        for batch in batches:
            best = raw.at(batch)
            cells.append(f"{num(best.items_per_s)} ({ms(best.p50_ms)} ms)" if best else ABSENT)
        if paced:
            cells.append(_paced_cell(raw))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _paced_cell(raw: RawModel) -> str:
    """The fastest paced batch-1 call: its p50 and the idle it followed."""
    fastest = raw.fastest_paced()
    return f"{ms(fastest.p50_ms)} ms ({ms(fastest.idle_gap_ms)} ms idle)" if fastest else ABSENT


def split_table(results: Results) -> list[str]:
    """Per point of a gateway system: client and server time, then the compute step per batch
    split as Triton splits it, beside the raw call at the batch size this point formed."""
    lines = [
        "| Model | System | c | Client p50 | Server mean | Queue mean | Rows per batch | "
        "Compute | Input | Backend | Output | Hand-off | Raw call at that batch | "
        "Backend ÷ raw |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for point in results.points:
        split = point.server_ms
        if split is None:
            continue
        backend, same = backend_ratio(results.raw.get(point.model), point)
        ratio = f"{backend / same:.2f}x" if backend is not None and same else ABSENT
        batch = split.formed_batch
        raw_cell = f"{ms(same)} (batch {batch})" if same is not None else ABSENT
        lines.append(
            f"| {point.model} | `{point.system}` | {point.concurrency} | "
            f"{ms(point.latency_ms.p50)} | {ms(split.request_mean_ms)} | "
            f"{ms(split.queue_mean_ms)} | {num(split.mean_batch_size, 1)} | "
            f"{ms(split.compute_mean_ms)} | {ms(split.input_mean_ms)} | "
            f"{ms(split.backend_mean_ms)} | {ms(split.output_mean_ms)} | "
            f"{ms(split.handoff_mean_ms)} | {raw_cell} | {ratio} |"
        )
    return lines if len(lines) > 2 else []


def ratio_table(results: Results) -> list[str]:
    """Per model and gateway system, the best point against the raw call twice: at the batch
    size that point formed (fair: what the gateway could have computed with its batches) and
    at the raw limit's best batch (what this machine can compute at all)."""
    lines = [
        "| Model | System | Best (req/s) | At | Rows per batch formed | Raw items/s at that "
        "batch | Ratio at formed batch | Raw limit (items/s) | Best-batch ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model in models_of(results):
        raw = results.raw.get(model)
        if raw is None:
            continue
        for system in systems_of(results):
            best = best_point(results, system, model)
            if best is None or best.server_ms is None:
                continue
            same = raw_at_formed(raw, best)
            fair = f"{best.throughput / same.items_per_s:.2f}x" if same else ABSENT
            limit = raw.limit_items_per_s
            lines.append(
                f"| {model} | `{system}` | {num(best.throughput)} | c={best.concurrency} | "
                f"{num(best.server_ms.mean_batch_size, 1)} | "
                f"{num(same.items_per_s) if same else ABSENT} | {fair} | "
                f"{num(limit)} (batch {raw.limit_batch}) | "
                f"{best.throughput / limit:.2f}x |"
                if limit
                else ""
            )
    return [line for line in lines if line] if len(lines) > 2 else []


def server_table(results: Results) -> list[str]:
    lines = [
        "| Server | Cold start (s) | RSS ready (MiB) | RSS after load (MiB) | Settings |",
        "|---|---:|---:|---:|---|",
    ]
    for name, info in results.servers.items():
        lines.append(
            f"| {name} | {info.cold_start_s:.1f} | {info.rss_ready_mb:.0f} | "
            f"{info.rss_loaded_mb:.0f} | {info.settings} |"
        )
    return lines


FLOOR_OF = {"grpc": "floor-grpc-aio", "http": "floor-uvicorn"}


def _floor(system: str) -> str:
    return FLOOR_OF["grpc" if "grpc" in system else "http"]


def cpu_table(results: Results) -> list[str]:
    """Per model, system and concurrency: the server's CPU ms per answered request, and its
    ratio to the floor of its transport (uvicorn for HTTP, grpc.aio for gRPC) at that point."""
    concurrency = results.config.concurrency
    lines = [
        "| Model | System | " + " | ".join(f"c={c}" for c in concurrency) + " |",
        "|---|---|" + "---:|" * len(concurrency),
    ]
    for model in models_of(results):
        for system in systems_of(results):
            points = [point_at(results, system, model, c) for c in concurrency]
            if not any(p and p.server_cpu_ms is not None for p in points):
                continue
            cells = []
            for c, point in zip(concurrency, points, strict=True):
                if point is None or point.server_cpu_ms is None:
                    cells.append(ABSENT)
                    continue
                floor = point_at(results, _floor(system), model, c)
                ratio = (
                    f" ({point.server_cpu_ms / floor.server_cpu_ms:.1f}x)"
                    if floor and floor.server_cpu_ms and not system.startswith("floor-")
                    else ""
                )
                cells.append(f"{point.server_cpu_ms:.3f}{ratio}")
            lines.append(f"| {model} | `{system}` | " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []
