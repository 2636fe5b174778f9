"""wrk's output, as `loadtests/wrk_post.lua` prints it."""

from __future__ import annotations

import pytest

from loadtests.drive import wrk


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
