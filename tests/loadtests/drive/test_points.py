"""One benchmark point: repeated runs keep the median run whole."""

from __future__ import annotations

import pytest

from loadtests.drive.points import median_run
from loadtests.reporting.conditions import repeat_spread
from loadtests.reporting.records import Point, Results
from tests.loadtests.results_data import MACHINE, point_record


def test_repeated_runs_keep_the_median_run_whole() -> None:
    runs = [
        Point.model_validate(point_record("gateway-v2-json", "iris", 32, throughput, p50))
        for throughput, p50 in ((900, 9.0), (1200, 7.0), (1000, 8.0))
    ]
    kept = median_run(runs)
    assert kept.throughput == 1000 and kept.latency_ms.p50 == 8.0
    assert kept.repeats == [900, 1200, 1000]
    assert median_run(runs[:1]).repeats is None
    others = [
        kept.model_copy(update={"repeats": [100, 110, 105]}),
        kept.model_copy(update={"repeats": [100, 120]}),
    ]
    results = Results.model_validate({"machine": MACHINE, "config": {"models": []}})
    spread = repeat_spread(results.model_copy(update={"points": [kept, *others, runs[0]]}))
    assert spread == (pytest.approx(1.2), pytest.approx(1200 / 900))
