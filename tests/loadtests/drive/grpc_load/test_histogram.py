"""The gRPC generators' results: the histogram, worker lines, merging, the split of calls."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from loadtests.drive.grpc_load.cpp import pick_engine
from loadtests.drive.grpc_load.histogram import (
    Histogram,
    WorkerResult,
    bucket_of,
    merge,
    parse_worker,
    split,
)
from loadtests.drive.grpc_load.request import GrpcLoadError


def test_histogram_percentiles_are_within_one_bucket() -> None:
    latencies = [float(us) for us in range(100, 10_100)]  # 0.1 .. 10.1 ms, uniform
    ms = Histogram.of(latencies).latency_ms()
    exact = {"p50": 5.1, "p90": 9.1, "p99": 10.0, "p99.9": 10.09}
    for key, value in exact.items():
        assert ms[key] == pytest.approx(value, rel=0.011), key
    assert ms["mean"] == pytest.approx(np.mean(latencies) / 1000)
    assert ms["max"] == pytest.approx(10.099)
    assert Histogram.of([]).latency_ms()["p50"] == 0.0


def test_merged_histograms_equal_one_histogram_of_all_samples() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.lognormal(7, 1, 5000).tolist(), rng.lognormal(8, 0.5, 3000).tolist()
    merged = Histogram.of(a).merge(Histogram.of(b))
    whole = Histogram.of(a + b)
    assert merged.counts == whole.counts and merged.count == 8000
    assert merged.latency_ms() == pytest.approx(whole.latency_ms())


def test_worker_line_round_trips_and_workers_merge() -> None:
    one = WorkerResult(100, 2, 2.0, 0.5, Histogram.of([1000.0] * 100), {"UNAVAILABLE": 2})
    two = WorkerResult(300, 1, 2.1, 0.7, Histogram.of([3000.0] * 300), {"UNAVAILABLE": 1})
    parsed = parse_worker("noise\n" + two.to_line() + "\n")
    assert parsed == two
    result = merge([one, parsed])
    assert (result.requests, result.errors, result.seconds) == (400, 3, 2.1)
    assert result.throughput == pytest.approx(397 / 2.1)
    assert result.latency_ms["p50"] == pytest.approx(3.0, rel=0.011)
    assert result.latency_ms["mean"] == pytest.approx(2.5)
    assert result.error_codes == {"UNAVAILABLE": 3}
    assert result.client_cpu_us_per_call == pytest.approx(1.2 / 400 * 1e6)
    with pytest.raises(GrpcLoadError):
        parse_worker("no result here")
    with pytest.raises(GrpcLoadError):
        merge([])


def test_the_cpp_generator_line_parses_like_a_worker_line() -> None:
    # What grpc_gen.cc prints (bucket keys are 1 %-wide log buckets of microseconds).
    bucket = bucket_of(800.0)
    line = (
        f'GRPC_RESULT {{"requests": 10, "errors": 1, "seconds": 1.5, "cpu_s": 0.01, '
        f'"latency": {{"buckets": {{"{bucket}": 10}}, "total_us": 8000, "max_us": 801}}, '
        f'"error_codes": {{"DEADLINE_EXCEEDED": 1}}}}'
    )
    parsed = parse_worker(line)
    assert parsed.histogram.counts == Counter({bucket: 10})
    assert parsed.histogram.latency_ms()["p99"] == pytest.approx(0.8, rel=0.011)
    assert parsed.error_codes == {"DEADLINE_EXCEEDED": 1}


def test_concurrency_is_split_evenly_over_workers() -> None:
    assert split(32, 2) == [16, 16]
    assert split(5, 2) == [3, 2]
    assert split(1, 4) == [1]
    with pytest.raises(ValueError, match="engine"):
        pick_engine("ghz")
