"""The gRPC load generator for ~2 s against a real tiny gateway, each engine it can run here."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests import grpc_ceiling
from loadtests.drive.catalog import load_model
from loadtests.drive.grpc_load.cpp import cpp_binary
from loadtests.drive.grpc_load.probe import check, wait_serving
from loadtests.drive.grpc_load.request import GrpcLoadError, GrpcRequest
from loadtests.drive.grpc_load.runner import run
from tests.servers import gateway
from tests.tiny_models import classifier

pytestmark = pytest.mark.integration


def _cpp_or_skip() -> None:
    try:
        cpp_binary()
    except GrpcLoadError as error:  # no g++ / libgrpc++-dev on this machine
        pytest.skip(str(error))


@pytest.mark.parametrize("engine", ["cpp", "python"])
def test_generator_loads_a_real_gateway_without_errors(tmp_path: Path, engine: str) -> None:
    if engine == "cpp":
        _cpp_or_skip()
    store = tmp_path / "store"
    classifier(store)
    model = load_model(store, "tab")
    with gateway(store, tmp_path) as server:
        wait_serving(server.grpc_address, 30, server.process)
        request = GrpcRequest(server.grpc_address, model.v2_grpc)
        assert check(request) is None
        result = run(request, 4, 2.0, processes=2, engine=engine)
    assert result.generator == engine
    assert result.errors == 0, result.error_codes
    assert result.requests > 20 and result.throughput > 10
    assert 1.9 <= result.seconds <= 4.0
    latency = result.latency_ms
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert result.client_cpu_s > 0


def test_a_refused_call_is_an_error_before_the_clock_starts(tmp_path: Path) -> None:
    store = tmp_path / "store"
    classifier(store)
    with gateway(store, tmp_path) as server:
        wait_serving(server.grpc_address, 30, server.process)
        unknown = GrpcRequest(server.grpc_address, b"\n\x07missing")
        assert "NOT_FOUND" in (check(unknown) or "")
        with pytest.raises(GrpcLoadError, match="did not start"):
            run(unknown, 2, 1.0, processes=1, engine="python")


def test_ceiling_against_the_echo_server(tmp_path: Path) -> None:
    _cpp_or_skip()
    with grpc_ceiling.echo_server("cpp", tmp_path) as target:
        rows = grpc_ceiling.measure(
            GrpcRequest(target, grpc_ceiling.ECHO_REQUEST), [8], [2], ["cpp"], 1.0, "e"
        )
    (row,) = rows
    assert row["errors"] == 0 and row["throughput"] > 100 and row["client_cpu_us_per_call"] > 0
