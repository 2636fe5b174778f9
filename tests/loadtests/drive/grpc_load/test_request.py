"""The gRPC call a model gets, and where the gRPC endpoint is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from loadtests.drive.catalog import load_model
from loadtests.drive.grpc_load.request import target_for
from service.grpc import converters
from tests.tiny_models import full_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return full_store(tmp_path_factory.mktemp("store"))


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
    assert target_for("http://10.0.0.5:8000") == "10.0.0.5:8001"
    assert target_for(None) == "127.0.0.1:8001"
    assert target_for("http://10.0.0.5:8000", "127.0.0.1:9999") == "127.0.0.1:9999"
