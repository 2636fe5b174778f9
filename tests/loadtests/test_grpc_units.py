"""The gRPC load generator's pure parts: the histogram, worker lines, merging, the payload."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from loadtests import grpc_load, report
from loadtests.catalog import load_model
from loadtests.grpc_load import Histogram, WorkerResult
from loadtests.records import Results
from service.grpc import converters
from tests.tiny_models import full_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return full_store(tmp_path_factory.mktemp("store"))


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
    parsed = grpc_load.parse_worker("noise\n" + two.to_line() + "\n")
    assert parsed == two
    result = grpc_load.merge([one, parsed])
    assert (result.requests, result.errors, result.seconds) == (400, 3, 2.1)
    assert result.throughput == pytest.approx(397 / 2.1)
    assert result.latency_ms["p50"] == pytest.approx(3.0, rel=0.011)
    assert result.latency_ms["mean"] == pytest.approx(2.5)
    assert result.error_codes == {"UNAVAILABLE": 3}
    assert result.client_cpu_us_per_call == pytest.approx(1.2 / 400 * 1e6)
    with pytest.raises(grpc_load.GrpcLoadError):
        grpc_load.parse_worker("no result here")
    with pytest.raises(grpc_load.GrpcLoadError):
        grpc_load.merge([])


def test_the_cpp_generator_line_parses_like_a_worker_line() -> None:
    # What grpc_gen.cc prints (bucket keys are 1 %-wide log buckets of microseconds).
    bucket = grpc_load.bucket_of(800.0)
    line = (
        f'GRPC_RESULT {{"requests": 10, "errors": 1, "seconds": 1.5, "cpu_s": 0.01, '
        f'"latency": {{"buckets": {{"{bucket}": 10}}, "total_us": 8000, "max_us": 801}}, '
        f'"error_codes": {{"DEADLINE_EXCEEDED": 1}}}}'
    )
    parsed = grpc_load.parse_worker(line)
    assert parsed.histogram.counts == Counter({bucket: 10})
    assert parsed.histogram.latency_ms()["p99"] == pytest.approx(0.8, rel=0.011)
    assert parsed.error_codes == {"DEADLINE_EXCEEDED": 1}


def test_concurrency_is_split_evenly_over_workers() -> None:
    assert grpc_load.split(32, 2) == [16, 16]
    assert grpc_load.split(5, 2) == [3, 2]
    assert grpc_load.split(1, 4) == [1]
    with pytest.raises(ValueError, match="engine"):
        grpc_load.pick_engine("ghz")


@pytest.mark.parametrize("name", ["tab", "img", "txt"])
def test_grpc_request_carries_the_same_tensors_as_the_binary_body(store: Path, name: str) -> None:
    model = load_model(store, name)
    message = pb.ModelInferRequest.FromString(model.v2_grpc)
    assert message.model_name == name
    assert [o.name for o in message.outputs] == model.output_names
    assert len(message.raw_input_contents) == len(message.inputs)
    decoded = converters.infer_request(message)
    assert [t.name for t in decoded.inputs] == [s.name for s in model.manifest.inputs]
    for tensor in decoded.inputs:
        np.testing.assert_array_equal(tensor.data, model.feed[tensor.name])


def test_grpc_target_defaults_to_the_http_hosts_name_on_8001() -> None:
    assert grpc_load.target_for("http://10.0.0.5:8000") == "10.0.0.5:8001"
    assert grpc_load.target_for(None) == "127.0.0.1:8001"
    assert grpc_load.target_for("http://10.0.0.5:8000", "127.0.0.1:9999") == "127.0.0.1:9999"


def _point(system: str, model: str, c: int, rps: float, p50: float) -> dict[str, object]:
    return {
        "system": system,
        "model": model,
        "concurrency": c,
        "throughput": rps,
        "errors": 0,
        "latency_ms": {"mean": p50, "p50": p50, "p99": p50 * 2},
    }


def test_grpc_and_baseline_goals() -> None:
    previous = {
        "machine": {"date": "2026-11-22 08:43 UTC"},
        "points": [
            _point("gateway-v2-json", "iris", 32, 2400, 13.0),
            _point("pytriton-v2-json", "iris", 32, 1100, 26.0),
        ],
    }
    baseline = report.baseline_of(previous)
    assert [p.system for p in baseline.points] == ["gateway-v2-json"]
    results = {
        "machine": {"date": "2026-12-02 00:00 UTC", "cpu": "test"},
        "config": {"models": ["iris"]},
        "raw": {"iris": {"limit_items_per_s": 1e6, "batch1_p50_ms": 0.01}},
        "points": [
            _point("gateway-v2-grpc", "iris", 1, 900, 0.9),
            _point("gateway-v2-grpc", "iris", 32, 2000, 14.0),
            _point("pytriton-v2-grpc", "iris", 32, 1000, 30.0),
            _point("gateway-v2-json", "iris", 32, 2100, 14.0),
        ],
        "servers": {},
        "baseline": baseline.model_dump(by_alias=True),
    }
    typed = Results.model_validate(results)
    rows = {
        (r.goal[:24], r.ours): r
        for r in [*report.evaluate(typed), *report.evaluate(typed, report.EARLIER_GOALS)]
    }
    ratio = rows[("Gateway ÷ PyTriton throu", "gateway-v2-grpc")]
    assert ratio.value == 2.0 and ratio.met is True
    overhead = rows[("c=1 p50 overhead over gR", "gateway-v2-grpc")]
    assert overhead.value == pytest.approx(0.89) and overhead.met is True
    rest = rows[("REST throughput at c=32 ", "gateway-v2-json")]
    assert rest.value == pytest.approx(2100 / 2400) and rest.met is False
    assert rest.theirs == "previous run (2026-11-22 08:43 UTC)"
    assert ("REST throughput at c=32 ", "gateway-v2-binary") not in rows  # measured in neither
