"""Finding figures in a run's results: a system's points, the point at a concurrency, its best,
the raw call at the batch size a point formed, and the previous run's point."""

from __future__ import annotations

from typing import Any

from loadtests.reporting.goals import REST_SYSTEMS
from loadtests.reporting.records import Baseline, Point, RawModel, RawPoint, Results


def points_of(results: Results, system: str, model: str) -> list[Point]:
    found = [p for p in results.points if p.system == system and p.model == model]
    return sorted(found, key=lambda p: p.concurrency)


def point_at(results: Results, system: str, model: str, concurrency: int) -> Point | None:
    return next(
        (p for p in points_of(results, system, model) if p.concurrency == concurrency), None
    )


def baseline_at(results: Results, system: str, model: str, concurrency: int) -> Point | None:
    """The same point in the previously recorded run (`baseline`, copied in by the bench)."""
    points = results.baseline.points if results.baseline else []
    return next(
        (p for p in points if (p.system, p.model, p.concurrency) == (system, model, concurrency)),
        None,
    )


def baseline_of(previous: dict[str, Any]) -> Baseline:
    """What a new run keeps of the previous recorded run to compare the REST figures with."""
    keep = ("system", "model", "concurrency", "throughput", "latency_ms")
    return Baseline.model_validate(
        {
            "date": previous.get("machine", {}).get("date", "?"),
            "points": [
                {key: point[key] for key in keep if key in point}
                for point in previous.get("points", [])
                if point.get("system") in REST_SYSTEMS
            ],
        }
    )


def best_point(results: Results, system: str, model: str) -> Point | None:
    points = points_of(results, system, model)
    return max(points, key=lambda p: p.throughput) if points else None


def models_of(results: Results) -> list[str]:
    seen = [*results.raw]
    for point in results.points:
        if point.model not in seen:
            seen.append(point.model)
    order = results.config.models
    return sorted(seen, key=lambda m: order.index(m) if m in order else len(order))


def systems_of(results: Results) -> list[str]:
    found: list[str] = []
    for point in results.points:
        if point.system not in found:
            found.append(point.system)
    return found


def raw_at_formed(raw: RawModel | None, point: Point | None) -> RawPoint | None:
    """The raw call at the batch size `point` formed inside the gateway (None: unknown)."""
    if raw is None or point is None or point.server_ms is None:
        return None
    batch = point.server_ms.formed_batch
    return raw.at(batch) if batch is not None else None


def backend_ratio(raw: RawModel | None, point: Point | None) -> tuple[float | None, float | None]:
    """(gateway backend mean per batch, raw mean per call at the same batch size), ms."""
    mine = point.server_ms.backend_mean_ms if point and point.server_ms else None
    same = raw_at_formed(raw, point)
    return mine, same.mean_ms if same else None


def best_within_slo(results: Results, system: str, model: str, slo_ms: float) -> Point | None:
    fits = [
        p for p in points_of(results, system, model) if p.latency_ms.p99 <= slo_ms and not p.errors
    ]
    return max(fits, key=lambda p: p.throughput) if fits else None


def paced_raw(results: Results) -> bool:
    """The run timed raw batch-1 calls paced too (runs before 2026-12-06 did not)."""
    return any(entry.fastest_paced() for entry in results.raw.values())
