"""Goals to verdicts: each kind's figures, met or not, and when a row is left out."""

from __future__ import annotations

import pytest

from loadtests import bench
from loadtests.reporting.evaluate import evaluate
from loadtests.reporting.goals import EARLIER_GOALS
from loadtests.reporting.lookup import baseline_of
from loadtests.reporting.records import GoalRow, Results
from tests.loadtests.results_data import MACHINE, point_record


def test_goals_are_stated_met_or_not() -> None:
    results = {
        "machine": MACHINE,
        "config": {"models": ["iris", "minilm"]},
        "raw": {
            "iris": {"limit_items_per_s": 1e6, "batch1_p50_ms": 0.01},
            "minilm": {
                "limit_items_per_s": 100.0,
                "batch1_p50_ms": 5.0,
                "batch1_paced_p50_ms": 6.5,
            },
        },
        "points": [
            point_record("gateway-v2-json", "iris", 1, 900, 0.8),
            point_record("gateway-v2-json", "iris", 32, 3000, 9.0),
            point_record("pytriton-v2-json", "iris", 32, 1500, 20.0),
            point_record("gateway-torchserve-v2-json", "iris", 32, 1200, 25.0),
            point_record("torchserve", "iris", 32, 1600, 15.0),
            point_record("gateway-v2-binary", "minilm", 1, 80, 7.0),
            point_record("gateway-v2-binary", "minilm", 32, 95, 300.0),
        ],
        "servers": {"gateway": {"cold_start_s": 2.5, "rss_ready_mb": 420.0}},
    }
    typed = Results.model_validate(results)
    rows = {
        (r.goal[:20], r.model, r.ours): r
        for r in [*evaluate(typed), *evaluate(typed, EARLIER_GOALS)]
    }
    triton = rows[("Gateway ÷ PyTriton t", "iris", "gateway-v2-json")]
    assert triton.value == 2.0 and triton.met is True
    limit = rows[("Compute-bound: best ", "minilm", "gateway-v2-binary")]
    assert limit.goal.startswith("Compute-bound: best throughput ÷ raw limit")
    assert limit.value == pytest.approx(0.95) and limit.met is True
    overhead = rows[("c=1 p50 overhead: ga", "minilm", "gateway-v2-binary")]
    assert overhead.value == pytest.approx(2.0) and overhead.met is False
    assert rows[("c=1 p50 overhead: ga", "iris", "gateway-v2-json")].met is True
    small = rows[("c=1 p50 overhead, sm", "iris", "gateway-v2-json")]
    assert small.value == pytest.approx(0.79) and small.met is False
    # Paced raw calls measured for minilm only: its row has figures, iris's is not measured.
    paced = rows[("c=1 p50 overhead, pa", "minilm", "gateway-v2-binary")]
    assert paced.other == 6.5 and paced.value == pytest.approx(0.5) and paced.met is True
    assert rows[("c=1 p50 overhead, pa", "iris", "gateway-v2-json")].met is None
    front = rows[("Gateway in front of ", "iris", "gateway-torchserve-v2-json")]
    assert front.value == pytest.approx(0.75) and front.met is False
    cold = rows[("Gateway cold start t", "all", "gateway")]
    assert cold.value == 2.5 and cold.met is True
    memory = rows[("Gateway RSS once rea", "all", "gateway")]
    assert memory.value == 420.0 and memory.met is False
    # This goals stay in the table when not measured, saying why.
    workers = rows[("2 workers ÷ 1 worker", "iris", "gateway-2workers-v2-json")]
    assert workers.met is None and workers.value is None


def test_backend_and_formed_batch_goals_use_the_raw_call_at_the_batch_formed() -> None:
    raw_batches = [
        {"batch": 1, "calls": 10, "items_per_s": 100.0, "p50_ms": 10.0, "p99_ms": 11.0},
        {"batch": 8, "calls": 10, "items_per_s": 400.0, "p50_ms": 20.0, "p99_ms": 21.0},
        {"batch": 32, "calls": 10, "items_per_s": 800.0, "p50_ms": 40.0, "p99_ms": 41.0},
    ]
    results = Results.model_validate(
        {
            "machine": MACHINE,
            "config": {"models": ["minilm"]},
            "raw": {"minilm": {"batches": raw_batches, "limit_items_per_s": 800.0}},
            "points": [
                point_record(
                    "gateway-v2-binary",
                    "minilm",
                    1,
                    90,
                    11.0,
                    backend_mean_ms=10.5,
                    mean_batch_size=1.0,
                ),
                # Mean rows per batch 7.6 -> batch 8: raw 20 ms per call, 400 items/s.
                point_record(
                    "gateway-v2-binary",
                    "minilm",
                    16,
                    380,
                    40.0,
                    backend_mean_ms=24.0,
                    mean_batch_size=7.6,
                ),
            ],
        }
    )
    rows = evaluate(results)

    def row(goal: str, ours: str) -> GoalRow:
        found_rows = [
            r for r in rows if r.goal.startswith(goal) and r.ours == ours and r.model == "minilm"
        ]
        assert len(found_rows) == 1, found_rows
        (found,) = found_rows
        return found

    at_1 = row(
        "Backend time per batch ÷ raw call at the same batch size, c=1 ", "gateway-v2-binary"
    )
    assert at_1.value == pytest.approx(1.05) and at_1.met is True
    at_16 = row(
        "Backend time per batch ÷ raw call at the same batch size, c=16", "gateway-v2-binary"
    )
    assert at_16.value == pytest.approx(24.0 / 20.0) and at_16.met is False
    formed = row("Compute-bound: best throughput ÷ raw items/s", "gateway-v2-binary")
    assert formed.other == 400.0 and formed.value == pytest.approx(0.95) and formed.met is True
    best_batch = row("Compute-bound: best throughput ÷ raw limit", "gateway-v2-binary")
    assert best_batch.value == pytest.approx(380 / 800) and best_batch.met is False
    # No backend histogram (an older gateway): not measured, never met.
    assert (
        row("Backend time per batch ÷ raw call at the same batch size, c=1 ", "gateway-v2-json").met
        is None
    )
    # The bench measures the raw call at every batch size formed that it has not measured.
    assert bench.formed_batches(results.points, "minilm", [1, 32]) == [8]


def test_grpc_and_baseline_goals() -> None:
    previous = {
        "machine": {"date": "2026-11-22 08:43 UTC"},
        "points": [
            point_record("gateway-v2-json", "iris", 32, 2400, 13.0),
            point_record("pytriton-v2-json", "iris", 32, 1100, 26.0),
        ],
    }
    baseline = baseline_of(previous)
    assert [p.system for p in baseline.points] == ["gateway-v2-json"]
    results = {
        "machine": {"date": "2026-12-02 00:00 UTC", "cpu": "test"},
        "config": {"models": ["iris"]},
        "raw": {"iris": {"limit_items_per_s": 1e6, "batch1_p50_ms": 0.01}},
        "points": [
            point_record("gateway-v2-grpc", "iris", 1, 900, 0.9),
            point_record("gateway-v2-grpc", "iris", 32, 2000, 14.0),
            point_record("pytriton-v2-grpc", "iris", 32, 1000, 30.0),
            point_record("gateway-v2-json", "iris", 32, 2100, 14.0),
        ],
        "servers": {},
        "baseline": baseline.model_dump(by_alias=True),
    }
    typed = Results.model_validate(results)
    rows = {(r.goal[:24], r.ours): r for r in [*evaluate(typed), *evaluate(typed, EARLIER_GOALS)]}
    ratio = rows[("Gateway ÷ PyTriton throu", "gateway-v2-grpc")]
    assert ratio.value == 2.0 and ratio.met is True
    overhead = rows[("c=1 p50 overhead over gR", "gateway-v2-grpc")]
    assert overhead.value == pytest.approx(0.89) and overhead.met is True
    rest = rows[("REST throughput at c=32 ", "gateway-v2-json")]
    assert rest.value == pytest.approx(2100 / 2400) and rest.met is False
    assert rest.theirs == "previous run (2026-11-22 08:43 UTC)"
    assert ("REST throughput at c=32 ", "gateway-v2-binary") not in rows  # measured in neither


def test_cpu_goals_divide_cpu_per_request_by_the_floor_and_torchserve() -> None:
    points = [
        point_record("gateway-v2-json", "iris", 32, 3000, 9.0),
        point_record("floor-uvicorn", "iris", 32, 30000, 1.0),
        point_record("gateway-v2-grpc", "iris", 32, 2000, 9.0),
        point_record("floor-grpc-aio", "iris", 32, 8000, 3.0),
        point_record("gateway-predictions", "iris", 32, 3000, 9.0),
        point_record("torchserve", "iris", 32, 1000, 30.0),
    ]
    cpu = {
        "gateway-v2-json": 0.06,
        "floor-uvicorn": 0.02,
        "gateway-v2-grpc": 0.4,
        "floor-grpc-aio": 0.2,
        "gateway-predictions": 0.1,
        "torchserve": 0.4,
    }
    for point in points:
        point["server_cpu_ms"] = cpu[point["system"]]
    typed = Results.model_validate(
        {"machine": MACHINE, "config": {"models": ["iris"]}, "points": points}
    )
    rows = {(r.goal[:12], r.ours, r.theirs): r for r in evaluate(typed)}
    rest = rows[("REST: gatewa", "gateway-v2-json", "floor-uvicorn")]
    assert rest.value == pytest.approx(3.0) and rest.met is True  # at most 3: met at 3.0
    grpc = rows[("gRPC: gatewa", "gateway-v2-grpc", "floor-grpc-aio")]
    assert grpc.value == pytest.approx(2.0) and grpc.met is False
    users = rows[("TorchServe's", "gateway-predictions", "torchserve")]
    assert users.unit == "ms CPU per request, as a ratio"
    assert users.value == pytest.approx(0.25) and users.met is True
    native = rows[("TorchServe's", "gateway-native-mar", "torchserve")]
    assert native.met is None  # not measured, but kept in this table
