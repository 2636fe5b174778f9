"""The gateway's own split of a point: the difference of two `/metrics` scrapes."""

from __future__ import annotations

import pytest

from loadtests.systems import server_metrics


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
