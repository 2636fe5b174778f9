"""The streaming LSTM forecaster: the step graph equals the windowed network once `window`
readings have gone in, and served as `lstm_stream` beside `lstm` by a real gateway, streamed
readings (stock tritonclient) match the windowed model's answers."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
import tritonclient.http as httpclient

from service.triton.pbtxt import parse_config
from tests.servers import GatewayProcess, gateway
from tests.training.conftest import train
from training.models import LSTMForecasterGraph, LSTMStepGraph
from training.series_data import load_co2
from training.stream import STREAM_TOLERANCE, stream_config

WINDOW = 30


def test_step_graph_equals_the_windowed_graph_from_the_window_th_reading() -> None:
    torch.manual_seed(0)
    windowed = LSTMForecasterGraph(2, 340.0, 15.0, 0.5, [0.6, 0.9], hidden=8)
    torch.nn.init.normal_(windowed.head.weight, std=0.5)
    windowed.eval()
    window = 5
    step = LSTMStepGraph(windowed, window).eval()
    values = torch.from_numpy(340 + np.cumsum(np.random.default_rng(0).normal(0, 1, 23)))
    values = values.float()
    state = [torch.zeros(1, window, 8), torch.zeros(1, window, 8), torch.zeros(1, 1)]
    count = torch.zeros(1, 1)
    with torch.no_grad():
        for n in range(len(values)):
            forecast, h, c, previous, count = step(values[n].view(1, 1), *state, count)
            state = [h, c, previous]
            first = max(0, n - window + 1)
            expected = windowed(values[first : n + 1].view(1, -1, 1))
            torch.testing.assert_close(forecast, expected, atol=1e-5, rtol=0)
            assert float(count) < 2 * window  # exact in FP32 however long the stream


def test_the_config_is_a_sequence_model_with_implicit_state() -> None:
    config = parse_config(stream_config(WINDOW, 32, 1))
    states = {state.input_name: list(state.dims) for state in config.sequence_batching.state}
    assert states == {
        "h_in": [WINDOW, 32],
        "c_in": [WINDOW, 32],
        "previous_in": [1],
        "count_in": [1],
    }
    assert [tensor.name for tensor in config.input] == ["value"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A quickly trained lstm (the parity does not depend on its quality) and its stream."""
    store = tmp_path_factory.mktemp("stream") / "store"
    assert train("lstm", "--model-store", store, "--epochs", "2") == 0
    assert train("lstm_stream", "--model-store", store) == 0
    assert (store / "lstm_stream" / "config.pbtxt").is_file()
    with gateway(store, tmp_path_factory.mktemp("logs"), timeout_s=120) as process:
        yield process


def _windowed(server: GatewayProcess, values: np.ndarray) -> np.ndarray:
    """The served windowed model's forecast for each full window of `values`."""
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    windows = np.stack([values[end - WINDOW : end] for end in range(WINDOW, len(values) + 1)])
    item = httpclient.InferInput("series", [len(windows), WINDOW, 1], "FP32")
    item.set_data_from_numpy(windows[:, :, None].astype(np.float32))
    forecast = client.infer("lstm", [item]).as_numpy("forecast")
    client.close()
    return forecast[:, 0]


def _reading(module: Any, value: float) -> Any:
    item = module.InferInput("value", [1, 1], "FP32")
    item.set_data_from_numpy(np.array([[value]], dtype=np.float32))
    return item


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_sixty_weeks_streamed_match_the_windowed_model_from_week_30(
    served: GatewayProcess,
) -> None:
    values = load_co2().values[-60:].astype(np.float32)
    grpc = grpcclient.InferenceServerClient(served.grpc_address)
    answers: dict[int, float] = {}
    done = concurrent.futures.Future[None]()

    def callback(result: Any, error: Any) -> None:
        if error is not None:
            done.set_exception(error)
            return
        answers[int(result.get_response().id)] = float(result.as_numpy("forecast")[0, 0])
        if len(answers) == len(values):
            done.set_result(None)

    grpc.start_stream(callback)
    for week, value in enumerate(values):
        grpc.async_stream_infer(
            "lstm_stream",
            [_reading(grpcclient, float(value))],
            request_id=str(week),
            sequence_id=2001,
            sequence_start=week == 0,
            sequence_end=week == len(values) - 1,
        )
    done.result(timeout=120)
    grpc.stop_stream()
    grpc.close()
    streamed = np.array([answers[week] for week in range(WINDOW - 1, len(values))])
    expected = _windowed(served, values)
    assert len(streamed) == len(expected) == 31
    np.testing.assert_allclose(streamed, expected, atol=STREAM_TOLERANCE, rtol=0)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_four_interleaved_sequences_each_match_their_own_history(
    served: GatewayProcess,
) -> None:
    co2 = load_co2().values.astype(np.float32)
    histories = {3000 + k: co2[400 * k : 400 * k + 40] for k in range(4)}

    async def run() -> dict[int, list[float]]:
        client = grpcclient_aio.InferenceServerClient(served.grpc_address)
        forecasts: dict[int, list[float]] = {sequence: [] for sequence in histories}
        try:
            for week in range(40):  # each week, all four sequences step at once
                answers = await asyncio.gather(
                    *(
                        client.infer(
                            "lstm_stream",
                            [_reading(grpcclient_aio, float(history[week]))],
                            sequence_id=sequence,
                            sequence_start=week == 0,
                            sequence_end=week == 39,
                        )
                        for sequence, history in histories.items()
                    )
                )
                for sequence, answer in zip(histories, answers, strict=True):
                    forecasts[sequence].append(float(answer.as_numpy("forecast")[0, 0]))
        finally:
            await client.close()
        return forecasts

    forecasts = asyncio.run(run())
    for sequence, history in histories.items():
        expected = _windowed(served, history)
        got = np.array(forecasts[sequence][WINDOW - 1 :])
        np.testing.assert_allclose(got, expected, atol=STREAM_TOLERANCE, rtol=0)
