"""A time-series forecaster through every protocol: V2 REST and gRPC take FP32
[B, window, 1], `/predictions` takes `{"series": [...]}` and answers `{"forecast": [...]}`, V1
takes lists of values; a wrong length, NaN or a non-number is a 400 (INVALID_ARGUMENT)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from service.codecs.wire import Tensor
from service.errors import InvalidInput
from service.manifest import Manifest
from service.processing import (
    InstanceInputs,
    Limits,
    PayloadInputs,
    SeriesProcessor,
    processor_for,
)
from tests.service.grpc.conftest import Served, grpc_settings, serve
from tests.tiny_models import forecaster, forecaster_weights

WINDOW, HORIZON = 5, 2
SERIES = [1.0, 2.0, 3.0, 4.0, 5.5]


def expected(*rows: list[float]) -> np.ndarray:
    """The tiny forecaster's answer: each step a fixed weighted mean of the window."""
    return np.asarray(rows, dtype=np.float32) @ forecaster_weights(WINDOW, HORIZON)


@pytest.fixture(scope="module")
def fc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return forecaster(tmp_path_factory.mktemp("fc") / "store", window=WINDOW, horizon=HORIZON)


@pytest.fixture
def processor(fc_dir: Path) -> SeriesProcessor:
    made = processor_for(Manifest.read(fc_dir), fc_dir, Limits(max_rows=4))
    assert isinstance(made, SeriesProcessor)
    return made


@pytest.fixture
async def served(fc_dir: Path) -> AsyncIterator[Served]:
    async for item in serve(grpc_settings(fc_dir.parents[1])):
        yield item


# --- the processor -------------------------------------------------------------------------


def test_bodies_in_every_json_shape(processor: SeriesProcessor) -> None:
    for body, content_type, rows, many in [
        ({"series": SERIES}, "application/json", 1, False),
        (SERIES, "application/json", 1, False),
        ({"instances": [SERIES, SERIES]}, "application/json", 2, True),
        ([SERIES, {"series": SERIES}], "application/json", 2, True),
        ({"series": SERIES}, "", 1, False),
        ({"series": SERIES}, "application/x-www-form-urlencoded", 1, False),  # curl -d
        ({"data": {"series": SERIES}}, "text/plain", 1, False),
    ]:
        inputs, answer_many = processor.inputs_from_body(json.dumps(body).encode(), content_type)
        feed = processor.feed(inputs)
        assert feed["series"].shape == (rows, WINDOW, 1), body
        assert feed["series"].dtype == np.float32
        np.testing.assert_array_equal(feed["series"][0, :, 0], SERIES)
        assert answer_many is many


@pytest.mark.parametrize(
    ("instance", "message"),
    [
        ([1, 2, 3, 4], "exactly 5 values .* got 4"),
        ([1, 2, 3, 4, 5, 6], "exactly 5 values .* got 6"),
        ([], "exactly 5 values"),
        ([1, 2, "x", 4, 5], "must be numbers, got 'x'"),
        ([1, 2, None, 4, 5], "must be numbers"),
        ([1, 2, True, 4, 5], "must be numbers"),
        ([1, 2, [3], 4, 5], "must be numbers"),
        ([1, 2, float("nan"), 4, 5], "NaN or infinity"),
        ([1, 2, float("inf"), 4, 5], "NaN or infinity"),
        ([1, 2, 1e300, 4, 5], "beyond FP32"),
        ({"values": [1, 2, 3, 4, 5]}, '"series"'),
        ("1,2,3,4,5", "a list of 5 numbers"),
        (7, "a list of 5 numbers"),
    ],
)
def test_bad_series_are_invalid_input(
    processor: SeriesProcessor, instance: Any, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        processor.feed(InstanceInputs([instance]))


def test_bad_bodies(processor: SeriesProcessor) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        processor.inputs_from_body(b"", "application/json")
    with pytest.raises(InvalidInput, match="send the series as JSON"):
        processor.inputs_from_body(b"1 2 3 4 5", "text/plain")
    with pytest.raises(InvalidInput, match="limit is 4"):
        processor.feed(InstanceInputs([SERIES] * 5))
    with pytest.raises(InvalidInput, match="one series"):
        processor.feed(PayloadInputs([json.dumps([SERIES, SERIES]).encode()]))
    # JSON's NaN literal parses, then fails the finiteness check.
    inputs, _ = processor.inputs_from_body(b'{"series": [1, 2, NaN, 4, 5]}', "application/json")
    with pytest.raises(InvalidInput, match="NaN"):
        processor.feed(inputs)


def test_tensors_are_checked_against_the_manifest(processor: SeriesProcessor) -> None:
    good = np.ones((3, WINDOW, 1), dtype=np.float32)
    assert processor.feed_from_tensors([Tensor("series", "FP32", [3, WINDOW, 1], good)])
    for tensor, message in [
        (Tensor("series", "FP32", [1, 4, 1], np.ones((1, 4, 1), np.float32)), "shape"),
        (Tensor("series", "FP32", [1, WINDOW], np.ones((1, WINDOW), np.float32)), "shape"),
        (Tensor("series", "FP64", [1, WINDOW, 1], np.ones((1, WINDOW, 1))), "FP32"),
        (Tensor("x", "FP32", [1, WINDOW, 1], np.ones((1, WINDOW, 1), np.float32)), "unknown"),
        (
            Tensor("series", "FP32", [1, WINDOW, 1], np.full((1, WINDOW, 1), np.nan, np.float32)),
            "NaN",
        ),
    ]:
        with pytest.raises(InvalidInput, match=message):
            processor.feed_from_tensors([tensor])


def test_answers(processor: SeriesProcessor) -> None:
    outputs = {"forecast": np.array([[1.5, 2.5], [3.0, 4.0]], dtype=np.float32)}
    assert processor.predictions(outputs, top_k=5) == [
        {"forecast": [1.5, 2.5]},
        {"forecast": [3.0, 4.0]},
    ]
    assert processor.instance_outputs(outputs) == [[1.5, 2.5], [3.0, 4.0]]


# --- HTTP and gRPC -------------------------------------------------------------------------


async def test_predictions_route(served: Served) -> None:
    answer = await served.http.post("/predictions/fc", json={"series": SERIES})
    assert answer.status_code == 200
    assert set(answer.json()) == {"forecast"}
    np.testing.assert_allclose(answer.json()["forecast"], expected(SERIES)[0], rtol=1e-6)
    other = [5.0, 4.0, 3.0, 2.0, 1.0]
    batch = await served.http.post("/predictions/fc", json={"instances": [SERIES, other]})
    forecasts = [row["forecast"] for row in batch.json()]
    np.testing.assert_allclose(forecasts, expected(SERIES, other), rtol=1e-6)


async def test_v1_and_v2_rest(served: Served) -> None:
    v1 = await served.http.post("/v1/models/fc:predict", json={"instances": [SERIES]})
    assert v1.status_code == 200
    np.testing.assert_allclose(v1.json()["predictions"], expected(SERIES), rtol=1e-6)
    body = {
        "inputs": [{"name": "series", "datatype": "FP32", "shape": [1, WINDOW, 1], "data": SERIES}]
    }
    v2 = await served.http.post("/v2/models/fc/infer", json=body)
    assert v2.status_code == 200
    (output,) = v2.json()["outputs"]
    assert output["name"] == "forecast" and output["shape"] == [1, HORIZON]
    np.testing.assert_allclose(output["data"], expected(SERIES)[0], rtol=1e-6)
    metadata = (await served.http.get("/v2/models/fc")).json()
    assert metadata["inputs"] == [{"name": "series", "datatype": "FP32", "shape": [-1, 5, 1]}]
    assert metadata["parameters"]["task"] == "time_series_forecasting"
    assert (metadata["parameters"]["window"], metadata["parameters"]["horizon"]) == (5, 2)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/predictions/fc", b'{"series": [1, 2, 3]}', "exactly 5 values"),
        ("/predictions/fc", b'{"series": [1, 2, NaN, 4, 5]}', "NaN"),
        ("/predictions/fc", b'{"series": [1, 2, "3", 4, 5]}', "must be numbers"),
        ("/predictions/fc", b"not json", "send the series as JSON"),
        ("/v1/models/fc:predict", b'{"instances": [[1, 2, 3, 4, 5, 6]]}', "exactly 5 values"),
        (
            "/v2/models/fc/infer",
            b'{"inputs": [{"name": "series", "datatype": "FP32", "shape": [1, 4, 1],'
            b' "data": [1, 2, 3, 4]}]}',
            "shape",
        ),
    ],
)
async def test_bad_series_are_400(served: Served, path: str, body: bytes, message: str) -> None:
    answer = await served.http.post(
        path, content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400
    assert message in answer.json()["error"]


async def test_grpc_infer_and_invalid_argument(served: Served) -> None:
    rows = np.array([SERIES, [2.0] * WINDOW], dtype=np.float32).reshape(2, WINDOW, 1)
    item = grpcclient.InferInput("series", list(rows.shape), "FP32")
    item.set_data_from_numpy(rows)
    result = await served.grpc.infer("fc", [item])
    np.testing.assert_allclose(
        result.as_numpy("forecast"), expected(SERIES, [2.0] * WINDOW), rtol=1e-6
    )
    for bad in (np.ones((1, 4, 1), np.float32), np.full((1, WINDOW, 1), np.nan, np.float32)):
        wrong = grpcclient.InferInput("series", list(bad.shape), "FP32")
        wrong.set_data_from_numpy(bad)
        with pytest.raises(InferenceServerException) as error:
            await served.grpc.infer("fc", [wrong])
        assert error.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
