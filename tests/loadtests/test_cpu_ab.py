"""The A/B driver's targets: each protocol loads the gateway with the body its users send."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests import cpu_ab
from loadtests.drive import wrk
from loadtests.drive.catalog import load_model
from loadtests.drive.grpc_load.request import GrpcRequest
from tests.tiny_models import full_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return full_store(tmp_path_factory.mktemp("store"))


def test_each_protocol_posts_its_own_body(store: Path) -> None:
    model = load_model(store, "img")
    base, grpc = "http://127.0.0.1:9", "127.0.0.1:10"
    rest = cpu_ab.target_for("rest", model, base, grpc)
    predictions = cpu_ab.target_for("predictions", model, base, grpc)
    infer = cpu_ab.target_for("grpc", model, base, grpc)
    assert isinstance(rest, wrk.Request) and rest.url == f"{base}/v2/models/img/infer"
    assert rest.body == model.v2_json
    assert isinstance(predictions, wrk.Request)
    assert predictions.url == f"{base}/predictions/img"
    assert (predictions.body, predictions.headers["Content-Type"]) == model.native
    assert predictions.headers["Content-Type"] == "image/png"
    assert isinstance(infer, GrpcRequest) and infer.target == grpc


def test_an_unknown_protocol_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as refused:
        cpu_ab.main(["--a", ".", "--b", ".", "--protocols", "rest,v1"])
    assert refused.value.code == 2
    assert "unknown protocols ['v1']" in capsys.readouterr().err
