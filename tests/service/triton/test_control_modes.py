"""Model control modes with Triton's names, on real gateway processes: `explicit` loads only
what it is told; `poll` follows the store under steady load without failing a request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.servers import gateway
from tests.service.triton.models import model_folder, scaled_model, two_heads_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
TOKEN = {"Authorization": "Bearer manage"}


def until(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)


def test_explicit_mode_loads_only_what_it_is_told(tmp_path: Path) -> None:
    store = tmp_path / "store"
    two_heads_model(store / "first" / "1" / "model.onnx")
    two_heads_model(store / "second" / "1" / "model.onnx")
    env = {
        "GATEWAY_MODEL_CONTROL_MODE": "explicit",
        "GATEWAY_MANAGEMENT_TOKEN": "manage",
    }
    with gateway(store, tmp_path, args=["--load-model", "first"], env=env) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
        assert client.is_model_ready("first")
        index = {e["name"]: e["state"] for e in client.get_model_repository_index(headers=TOKEN)}
        assert index == {"first": "READY", "second": "UNLOADED"}
        client.load_model("second", headers=TOKEN)
        assert client.is_model_ready("second")
        client.close()


def test_poll_mode_follows_the_store_under_load(tmp_path: Path) -> None:
    store = tmp_path / "store"
    scaled_model(store / "m" / "1" / "model.onnx", 1.0)
    env = {
        "GATEWAY_MODEL_CONTROL_MODE": "poll",
        "GATEWAY_REPOSITORY_POLL_SECS": "0.3",
        "GATEWAY_MANAGEMENT_TOKEN": "manage",
    }
    with gateway(store, tmp_path, env=env) as server:
        answers: list[float] = []
        failures: list[str] = []
        stop = threading.Event()

        def load() -> None:
            with httpclient.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
                while not stop.is_set():
                    item = httpclient.InferInput("v", [1, 2], "FP32")
                    item.set_data_from_numpy(np.ones((1, 2), np.float32))
                    try:
                        result = client.infer("m", [item])
                    except Exception as error:
                        failures.append(str(error))
                    else:
                        answers.append(float(result.as_numpy("y")[0, 0]))

        senders = [threading.Thread(target=load) for _ in range(4)]
        for sender in senders:
            sender.start()
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            until(lambda: len(answers) > 20)
            # a new version appears: latest 1 serves it and the old one goes
            scaled_model(store / "m" / "2" / "model.onnx", 2.0)
            until(lambda: client.get_model_metadata("m")["versions"] == ["2"])
            seen = len(answers)
            until(lambda: len(answers) > seen + 20)
            assert answers[-1] == 2.0
            # a broken configuration dropped in: the serving version stays
            (store / "m" / "config.pbtxt").write_text("max_batch_size: oops\n")
            bad = model_folder(store, "bad", 'platform: "tensorrt_plan"\n')
            (bad / "1").mkdir()
            (bad / "1" / "model.plan").write_bytes(b"\0")

            def reported() -> bool:
                index = client.get_model_repository_index(headers=TOKEN)
                return any(e["name"] == "bad" and e["reason"] for e in index)

            until(reported)
            seen = len(answers)
            until(lambda: len(answers) > seen + 20)
            assert client.is_model_ready("m")
            # the model removed from the store is unloaded
            import shutil

            shutil.rmtree(store / "bad")
            until(
                lambda: (
                    "bad"
                    not in {e["name"] for e in client.get_model_repository_index(headers=TOKEN)}
                )
            )
        finally:
            stop.set()
            for sender in senders:
                sender.join(timeout=30)
        index = client.get_model_repository_index(headers=TOKEN)
        client.close()
        assert failures == []
        assert set(answers) == {1.0, 2.0}
        assert "bad" not in {entry["name"] for entry in index}
        assert "max_batch_size" in server.output()  # the failed reload says why
        assert "tensorrt_plan" in server.output()
