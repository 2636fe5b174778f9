"""The harness's pure parts: payloads, wrk output, /metrics arithmetic, goals, the load shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loadtests import bench, payloads, report, server_metrics, wrk
from loadtests.catalog import load_model
from loadtests.records import GoalRow, Point, Results
from loadtests.shape import Steps
from service.codecs import v2
from tests.tiny_models import full_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return full_store(tmp_path_factory.mktemp("store"))


@pytest.mark.parametrize("name", ["tab", "img", "txt"])
def test_bodies_decode_with_the_gateway_codec(store: Path, name: str) -> None:
    model = load_model(store, name)
    from_json = v2.decode_request(model.v2_json, None)
    body, length = model.v2_binary
    from_binary = v2.decode_request(body, str(length))
    for decoded in (from_json, from_binary):
        assert [t.name for t in decoded.inputs] == [s.name for s in model.manifest.inputs]
        for tensor in decoded.inputs:
            np.testing.assert_array_equal(tensor.data, model.feed[tensor.name])
    assert from_binary.outputs is not None and all(o.binary for o in from_binary.outputs)


def test_uploads_are_real_png_and_jpeg_digits() -> None:
    import io

    from PIL import Image

    files = payloads.upload_files(4)
    assert [kind for kind, _ in files] == ["image/png", "image/jpeg"] * 2
    for _, data in files:
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (28, 28) and image.mode == "L"


def test_sentences_vary_in_length() -> None:
    texts = payloads.sentences(50)
    lengths = {len(text.split()) for text in texts}
    assert min(lengths) >= 3 and max(lengths) <= 80 and len(lengths) > 10
    assert payloads.sentences(50) == texts


def test_wrk_result_line_is_parsed() -> None:
    line = (
        'WRK_RESULT {"requests":100,"duration_us":2000000,"bytes":5,"errors":{"connect":0,'
        '"read":0,"write":0,"status":4,"timeout":0},"latency_us":{"mean":1500.0,"stdev":1.0,'
        '"min":1,"max":9000,"p50":1200,"p90":2000,"p95":2500,"p99":4000,"p99.9":8000}}'
    )
    result = wrk.parse("Running 2s test\n" + line + "\n")
    assert result.errors == 4 and result.throughput == 48.0
    assert result.latency_ms["p50"] == 1.2 and result.latency_ms["p99.9"] == 8.0
    with pytest.raises(wrk.WrkError):
        wrk.parse("nothing")


def _histogram(name: str, labels: str, buckets: dict[str, int], total: float) -> str:
    lines = [f"# TYPE {name} histogram"]
    for le, count in buckets.items():
        lines.append(f'{name}_bucket{{{labels},le="{le}"}} {count}')
    lines.append(f"{name}_sum{{{labels}}} {total}")
    lines.append(f"{name}_count{{{labels}}} {buckets['+Inf']}")
    return "\n".join(lines)


def test_server_split_is_the_difference_of_two_scrapes() -> None:
    labels = 'model="iris",version="1"'
    before = server_metrics.parse(
        "\n".join(
            [
                _histogram(
                    "gateway_request_duration_seconds",
                    labels + ',protocol="v2"',
                    {"0.001": 10, "0.01": 10, "+Inf": 10},
                    0.005,
                ),
                _histogram("gateway_batch_size", labels, {"1.0": 10, "4.0": 10, "+Inf": 10}, 10),
            ]
        )
        + "\n"
    )
    after = server_metrics.parse(
        "\n".join(
            [
                _histogram(
                    "gateway_request_duration_seconds",
                    labels + ',protocol="v2"',
                    {"0.001": 10, "0.01": 110, "+Inf": 110},
                    0.505,
                ),
                _histogram(
                    "gateway_queue_duration_seconds", labels, {"0.001": 100, "+Inf": 100}, 0.02
                ),
                _histogram(
                    "gateway_compute_duration_seconds", labels, {"0.01": 25, "+Inf": 25}, 0.1
                ),
                _histogram("gateway_batch_size", labels, {"1.0": 10, "4.0": 35, "+Inf": 35}, 110),
                _histogram(
                    "gateway_batch_backend_seconds", labels, {"0.01": 25, "+Inf": 25}, 0.075
                ),
            ]
        )
        + "\n"
    )
    (row,) = server_metrics.split(before, after)
    assert (row.model, row.version, row.requests, row.batches) == ("iris", "1", 100, 25)
    assert row.request_mean_ms == pytest.approx(5.0)
    assert row.request_p50_ms == pytest.approx(5.5)  # halfway through the (1, 10] ms bucket
    assert row.queue_mean_ms == pytest.approx(0.2)
    assert row.compute_mean_ms == pytest.approx(4.0)
    assert row.mean_batch_size == pytest.approx(4.0)
    # Compute's parts: the backend call where exported, absent (None) where not.
    assert row.backend_mean_ms == pytest.approx(3.0)
    assert row.input_mean_ms is None and row.handoff_mean_ms is None
    # The 25 batches of this run all fell in the (1, 4] rows bucket.
    assert row.batch_sizes == {"4": 25}


def _point(
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


def test_goals_are_stated_met_or_not() -> None:
    results = {
        "machine": MACHINE,
        "config": {"models": ["iris", "minilm"]},
        "raw": {
            "iris": {"limit_items_per_s": 1e6, "batch1_p50_ms": 0.01},
            "minilm": {"limit_items_per_s": 100.0, "batch1_p50_ms": 5.0},
        },
        "points": [
            _point("gateway-v2-json", "iris", 1, 900, 0.8),
            _point("gateway-v2-json", "iris", 32, 3000, 9.0),
            _point("pytriton-v2-json", "iris", 32, 1500, 20.0),
            _point("gateway-torchserve-v2-json", "iris", 32, 1200, 25.0),
            _point("torchserve", "iris", 32, 1600, 15.0),
            _point("gateway-v2-binary", "minilm", 1, 80, 7.0),
            _point("gateway-v2-binary", "minilm", 32, 95, 300.0),
        ],
        "servers": {"gateway": {"cold_start_s": 2.5, "rss_ready_mb": 420.0}},
    }
    typed = Results.model_validate(results)
    rows = {
        (r.goal[:20], r.model, r.ours): r
        for r in [*report.evaluate(typed), *report.evaluate(typed, report.EARLIER_GOALS)]
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
                _point(
                    "gateway-v2-binary",
                    "minilm",
                    1,
                    90,
                    11.0,
                    backend_mean_ms=10.5,
                    mean_batch_size=1.0,
                ),
                # Mean rows per batch 7.6 -> batch 8: raw 20 ms per call, 400 items/s.
                _point(
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
    rows = report.evaluate(results)

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


def test_steps_ramp_per_scenario_then_stop() -> None:
    steps = Steps.parse("1,4", 10, 2)
    assert steps.total_s == 20
    assert steps.at(0.0, scenarios=4) == (4, 4.0)
    assert steps.at(12.0, scenarios=4) == (16, 6.0)
    assert steps.at(12.0) == (4, 1.5)
    assert steps.at(20.0) is None
    with pytest.raises(ValueError, match="user counts"):
        Steps.parse("", 10, 2)


def test_repeated_runs_keep_the_median_run_whole() -> None:
    runs = [
        Point.model_validate(_point("gateway-v2-json", "iris", 32, throughput, p50))
        for throughput, p50 in ((900, 9.0), (1200, 7.0), (1000, 8.0))
    ]
    kept = bench.median_run(runs)
    assert kept.throughput == 1000 and kept.latency_ms.p50 == 8.0
    assert kept.repeats == [900, 1200, 1000]
    assert bench.median_run(runs[:1]).repeats is None
    others = [
        kept.model_copy(update={"repeats": [100, 110, 105]}),
        kept.model_copy(update={"repeats": [100, 120]}),
    ]
    results = Results.model_validate({"machine": MACHINE, "config": {"models": []}})
    spread = report.repeat_spread(results.model_copy(update={"points": [kept, *others, runs[0]]}))
    assert spread == (pytest.approx(1.2), pytest.approx(1200 / 900))
