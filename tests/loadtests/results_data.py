"""Result records for the harness's tests: a point as `loadtests.bench` writes it, a machine."""

from __future__ import annotations

from typing import Any


def point_record(
    system: str, model: str, c: int, rps: float, p50: float, **server: Any
) -> dict[str, Any]:
    point: dict[str, Any] = {
        "system": system,
        "model": model,
        "concurrency": c,
        "throughput": rps,
        "errors": 0,
        "latency_ms": {"mean": p50, "p50": p50, "p99": p50 * 2},
    }
    if server:
        point["server_ms"] = server
    return point


MACHINE = {"date": "2026-12-02 00:00 UTC", "cpu": "test"}
