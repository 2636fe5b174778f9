"""Sequence batching on a real gateway process, driven by stock tritonclient (http and grpc,
sync, aio and streaming): models with control inputs and implicit state answer each
sequence's own history; idle sequences are freed; the live bound holds; errors say which."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpclient_aio
from tritonclient.utils import InferenceServerException

from tests.servers import GatewayProcess, gateway, sample_total
from tests.service.triton.models import (
    ACCUMULATOR_CONFIG,
    RUNNING_TOTAL_CONFIG,
    accumulator_model,
    model_folder,
    running_total_model,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

IDLE_S = 0.5


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sequences") / "repository"
    for name, idle, strategy in (
        ("accumulate", 60_000_000, "oldest { max_candidate_sequences: 64 }"),
        ("brief", int(IDLE_S * 1e6), "oldest { }"),
        # direct: 2 instances x max_batch_size 8 ... limited to 2 x 2 slots below
        ("bounded", 60_000_000, "direct { }"),
    ):
        config = ACCUMULATOR_CONFIG % {"idle": idle, "strategy": strategy}
        if name == "bounded":
            config = config.replace("max_batch_size: 8", "max_batch_size: 2")
            config += "instance_group [ { count: 2, kind: KIND_CPU } ]\n"
        folder = model_folder(root, name, config)
        accumulator_model(folder / "1" / "model.onnx")
    running = model_folder(root, "running", RUNNING_TOTAL_CONFIG)
    running_total_model(running / "1" / "model.onnx")
    return root


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with gateway(store, tmp_path_factory.mktemp("logs"), timeout_s=120) as process:
        yield process


def _input(module: Any, value: int) -> Any:
    item = module.InferInput("INPUT", [1, 1], "INT32")
    item.set_data_from_numpy(np.array([[value]], dtype=np.int32))
    return item


def _total(module: Any, value: float) -> Any:
    item = module.InferInput("INPUT", [1], "FP32")
    item.set_data_from_numpy(np.array([value], dtype=np.float32))
    return item


def test_configuration_and_metadata_show_sequence_batching(server: GatewayProcess) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    config = client.get_model_config("accumulate")
    batching = config["sequence_batching"]
    assert batching["oldest"]["max_candidate_sequences"] == 64
    kinds = [c["control"][0]["kind"] for c in batching["control_input"]]
    assert kinds == [
        "CONTROL_SEQUENCE_START",
        "CONTROL_SEQUENCE_READY",
        "CONTROL_SEQUENCE_END",
        "CONTROL_SEQUENCE_CORRID",
    ]
    assert [i["name"] for i in config["input"]] == ["INPUT"]  # controls and state are ours
    running = client.get_model_config("running")
    assert [i["name"] for i in running["input"]] == ["INPUT"]
    assert [o["name"] for o in running["output"]] == ["OUTPUT"]
    assert running["sequence_batching"]["state"][0]["input_name"] == "TOTAL_IN"
    assert "sequence" in client.get_server_metadata()["extensions"]
    client.close()
    grpc = grpcclient.InferenceServerClient(server.grpc_address)
    answer = grpc.get_model_config("accumulate", as_json=True)["config"]
    assert answer["sequence_batching"]["state"][0]["output_name"] == "ACC_OUT"
    grpc.close()


def test_http_sync_accumulates_with_controls_and_correlation_id(server: GatewayProcess) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    values = [3, 5, -2, 10]
    totals = []
    for index, value in enumerate(values):
        result = client.infer(
            "accumulate",
            [_input(httpclient, value)],
            sequence_id=77,
            sequence_start=index == 0,
            sequence_end=index == len(values) - 1,
        )
        totals.append(int(result.as_numpy("OUTPUT")[0, 0]))
        assert int(result.as_numpy("CORRID_OUT")[0, 0]) == 77
        assert int(result.as_numpy("END_OUT")[0, 0]) == (index == len(values) - 1)
    assert totals == list(np.cumsum(values))
    # the sequence ended: a next step without a start is refused, a new start begins at zero
    with pytest.raises(InferenceServerException, match=r"sequence 77 .* is not live"):
        client.infer("accumulate", [_input(httpclient, 1)], sequence_id=77)
    again = client.infer("accumulate", [_input(httpclient, 4)], sequence_id=77, sequence_start=True)
    assert int(again.as_numpy("OUTPUT")[0, 0]) == 4
    client.infer("accumulate", [_input(httpclient, 0)], sequence_id=77, sequence_end=True)
    client.close()


def test_errors_say_which(server: GatewayProcess) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    with pytest.raises(InferenceServerException, match="needs a sequence_id") as missing:
        client.infer("accumulate", [_input(httpclient, 1)])
    assert missing.value.status() == "400"
    with pytest.raises(InferenceServerException, match="is not live") as unknown:
        client.infer("accumulate", [_input(httpclient, 1)], sequence_id=404)
    assert unknown.value.status() == "400"
    client.infer("accumulate", [_input(httpclient, 1)], sequence_id=5, sequence_start=True)
    with pytest.raises(InferenceServerException, match=r"sequence 5 .* is already live"):
        client.infer("accumulate", [_input(httpclient, 1)], sequence_id=5, sequence_start=True)
    with pytest.raises(InferenceServerException, match="correlation id is UINT64"):
        client.infer("accumulate", [_input(httpclient, 1)], sequence_id="text", sequence_start=True)
    client.infer("accumulate", [_input(httpclient, 1)], sequence_id=5, sequence_end=True)
    client.close()
    grpc = grpcclient.InferenceServerClient(server.grpc_address)
    with pytest.raises(InferenceServerException, match="needs a sequence_id") as caught:
        grpc.infer("running", [_total(grpcclient, 1)])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    grpc.close()


def test_grpc_sync_and_aio_string_ids_without_batching(server: GatewayProcess) -> None:
    grpc = grpcclient.InferenceServerClient(server.grpc_address)
    seen = []
    for index, value in enumerate([1.5, 2.0, 4.0]):
        answer = grpc.infer(
            "running", [_total(grpcclient, value)], sequence_id="week", sequence_start=index == 0
        )
        seen.append(float(answer.as_numpy("OUTPUT")[0]))
    assert seen == [1.5, 3.5, 7.5]
    grpc.infer("running", [_total(grpcclient, 0)], sequence_id="week", sequence_end=True)
    grpc.close()

    async def run() -> None:
        http_aio = httpclient_aio.InferenceServerClient(f"127.0.0.1:{server.port}")
        grpc_aio = grpcclient_aio.InferenceServerClient(server.grpc_address)

        async def walk(client: Any, module: Any, sequence: str, values: list[float]) -> list[float]:
            totals = []
            for index, value in enumerate(values):
                answer = await client.infer(
                    "running",
                    [_total(module, value)],
                    sequence_id=sequence,
                    sequence_start=index == 0,
                    sequence_end=index == len(values) - 1,
                )
                totals.append(float(answer.as_numpy("OUTPUT")[0]))
            return totals

        try:
            pairs = [
                (http_aio, httpclient_aio, "h1", [1.0, 2.0, 3.0]),
                (http_aio, httpclient_aio, "h2", [10.0, 20.0]),
                (grpc_aio, grpcclient_aio, "g1", [0.5, 0.5, 0.5, 0.5]),
                (grpc_aio, grpcclient_aio, "g2", [-1.0, 1.0, -1.0]),
            ]
            results = await asyncio.gather(*(walk(*pair) for pair in pairs))
            for (_, _, _, values), totals in zip(pairs, results, strict=True):
                assert totals == list(np.cumsum(values))
        finally:
            await http_aio.close()
            await grpc_aio.close()

    asyncio.run(run())


def test_eight_sequences_interleaved_on_one_stream(server: GatewayProcess) -> None:
    grpc = grpcclient.InferenceServerClient(server.grpc_address)
    answers: dict[str, list[Any]] = {}
    steps = 6
    done = concurrent.futures.Future[None]()
    count = 0

    def callback(result: Any, error: Any) -> None:
        nonlocal count
        if error is not None:
            done.set_exception(error)
            return
        request = result.get_response().id
        answers.setdefault(request.split(":")[0], []).append(
            (int(request.split(":")[1]), int(result.as_numpy("OUTPUT")[0, 0]))
        )
        count += 1
        if count == 8 * steps:
            done.set_result(None)

    rng = np.random.default_rng(3)
    values = {sequence: rng.integers(-50, 50, steps) for sequence in range(1000, 1008)}
    grpc.start_stream(callback)
    for step in range(steps):
        for sequence, series in values.items():
            grpc.async_stream_infer(
                "accumulate",
                [_input(grpcclient, int(series[step]))],
                request_id=f"{sequence}:{step}",
                sequence_id=sequence,
                sequence_start=step == 0,
                sequence_end=step == steps - 1,
            )
    done.result(timeout=60)
    grpc.stop_stream()
    grpc.close()
    for sequence, series in values.items():
        got = [total for _, total in sorted(answers[str(sequence)])]
        assert got == list(np.cumsum(series)), sequence


def test_an_idle_sequence_is_freed_and_refused_after(server: GatewayProcess) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    before = _metrics(server)
    client.infer("brief", [_input(httpclient, 2)], sequence_id=9, sequence_start=True)
    assert sample_total(_metrics(server), "gateway_sequences_live", model="brief") == 1
    # Freed by the reaper (every idle/2) once idle for longer than IDLE_S.
    deadline = asyncio.run(_wait_until_freed(server, timeout_s=10))
    assert deadline, "the idle sequence was never freed"
    freed = sample_total(_metrics(server), "gateway_sequences_freed_idle_total", model="brief")
    assert freed - sample_total(before, "gateway_sequences_freed_idle_total", model="brief") == 1
    with pytest.raises(InferenceServerException, match=r"sequence 9 .* is not live"):
        client.infer("brief", [_input(httpclient, 1)], sequence_id=9)
    client.close()


async def _wait_until_freed(server: GatewayProcess, timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while loop.time() < end:
        if sample_total(_metrics(server), "gateway_sequences_live", model="brief") == 0:
            return True
        await asyncio.sleep(IDLE_S / 4)
    return False


def test_the_live_bound_holds_under_a_flood_of_starts(server: GatewayProcess) -> None:
    """`bounded`: direct, 2 instances x max_batch_size 2 = 4 slots."""

    async def run() -> list[Any]:
        client = grpcclient_aio.InferenceServerClient(server.grpc_address)
        try:
            return await asyncio.gather(
                *(
                    client.infer(
                        "bounded", [_input(grpcclient_aio, i)], sequence_id=i, sequence_start=True
                    )
                    for i in range(1, 25)
                ),
                return_exceptions=True,
            )
        finally:
            await client.close()

    outcomes = asyncio.run(run())
    started = [i + 1 for i, o in enumerate(outcomes) if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(started) == 4
    assert all(o.status() == "StatusCode.UNAVAILABLE" for o in refused)
    assert all("4 live sequences, its limit" in o.message() for o in refused)
    assert sample_total(_metrics(server), "gateway_sequences_live", model="bounded") == 4
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    with pytest.raises(InferenceServerException, match="its limit") as refused_http:
        client.infer("bounded", [_input(httpclient, 1)], sequence_id=999, sequence_start=True)
    assert refused_http.value.status() == "503"
    for sequence in started:
        client.infer("bounded", [_input(httpclient, 0)], sequence_id=sequence, sequence_end=True)
    fresh = client.infer("bounded", [_input(httpclient, 6)], sequence_id=999, sequence_start=True)
    assert int(fresh.as_numpy("OUTPUT")[0, 0]) == 6
    client.infer("bounded", [_input(httpclient, 0)], sequence_id=999, sequence_end=True)
    client.close()


def _metrics(server: GatewayProcess) -> str:
    return urllib.request.urlopen(f"{server.url}/metrics", timeout=10).read().decode()


def test_sigterm_answers_in_flight_steps_then_exits_0(store: Path, tmp_path: Path) -> None:
    """Steps that reached the server before SIGTERM are answered, in order; the rest are
    refused as the server shuts down; then it exits 0."""
    with gateway(store, tmp_path, timeout_s=120) as process:
        grpc = grpcclient.InferenceServerClient(process.grpc_address)
        answered: dict[int, list[tuple[int, int]]] = {}
        refused: list[str] = []
        finished = concurrent.futures.Future[None]()
        steps, sequences = 500, 4
        sent = steps * sequences

        def callback(result: Any, error: Any) -> None:
            if error is not None:
                refused.append(str(error))
            else:
                sequence, step = map(int, result.get_response().id.split(":"))
                total = int(result.as_numpy("OUTPUT")[0, 0])
                answered.setdefault(sequence, []).append((step, total))
            count = sum(map(len, answered.values())) + len(refused)
            if count == 20:  # the sender is still sending: many steps are in flight now
                process.process.send_signal(signal.SIGTERM)
            if count == sent:
                finished.set_result(None)

        grpc.start_stream(callback)
        for step in range(steps):
            for sequence in range(1, sequences + 1):
                grpc.async_stream_infer(
                    "accumulate",
                    [_input(grpcclient, 1)],
                    request_id=f"{sequence}:{step}",
                    sequence_id=sequence,
                    sequence_start=step == 0,
                )
        finished.result(timeout=120)
        grpc.stop_stream()
        grpc.close()
        code = process.process.wait(timeout=60)
        assert code == 0, process.output()
        assert all("shutting down" in reason for reason in refused), refused
        assert sum(map(len, answered.values())) > 20
        for steps in answered.values():
            # each sequence's answered steps are its first ones, each the running total
            assert sorted(steps) == [(step, step + 1) for step in range(len(steps))]
