"""`GATEWAY_WORKERS=2`: a real supervisor and its worker processes on shared ports.

Each HTTP answer names its worker (`Gateway-Worker: <pid>`); a new connection per request lets
the kernel spread the requests over both workers, so a test can reach every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
import tritonclient.grpc as triton_grpc

from service.server import WORKER_HEADER
from tests.servers import GatewayProcess, gateway, sample_total
from tests.tiny_models import classifier, regressor, slow_model

pytestmark = pytest.mark.integration

WORKERS = {"GATEWAY_WORKERS": "2"}
TOKEN = "manage-me"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
TAB_BODY = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]
}
SLOW_BODY = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 1024], "data": [0.5] * 1024}]
}


def worker_pids(server: GatewayProcess) -> set[int]:
    """The supervisor's live worker processes (not multiprocessing's resource tracker)."""
    pids = set()
    for child in psutil.Process(server.process.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                pids.add(child.pid)
        except psutil.Error:  # exited, not reaped yet
            continue
    return pids


def until(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def answers_from_every_worker(
    server: GatewayProcess, send: Callable[[], httpx.Response], timeout_s: float = 60
) -> dict[int, httpx.Response]:
    """Send on new connections until each live worker has answered; the last answer of each."""
    answers: dict[int, httpx.Response] = {}
    deadline = time.monotonic() + timeout_s
    while not worker_pids(server) <= answers.keys():
        assert time.monotonic() < deadline, f"only workers {sorted(answers)} answered"
        response = send()
        answers[int(response.headers[WORKER_HEADER])] = response
    return answers


def every_worker_ready(server: GatewayProcess) -> None:
    """`gateway()` returns once one worker is ready; wait for each (they load independently)."""

    def all_ready() -> bool:
        answers = answers_from_every_worker(
            server, lambda: httpx.get(f"{server.url}/v2/health/ready")
        )
        return {response.status_code for response in answers.values()} == {200}

    until(all_ready, "every worker to be ready")


def scrape(server: GatewayProcess) -> dict[int, str]:
    answers = answers_from_every_worker(server, lambda: httpx.get(f"{server.url}/metrics"))
    return {pid: response.text for pid, response in answers.items()}


def infer(server: GatewayProcess, model: str = "tab") -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=TAB_BODY)


def test_one_scrape_sums_every_worker(tmp_path: Path) -> None:
    store = classifier(tmp_path / "store").parent.parent
    with gateway(store, tmp_path, env=WORKERS) as server:
        every_worker_ready(server)
        served: Counter[int] = Counter()
        deadline = time.monotonic() + 60
        while len(served) < 2 or min(served.values()) < 5:
            assert time.monotonic() < deadline, f"requests reached only {dict(served)}"
            response = infer(server)
            assert response.status_code == 200
            served[int(response.headers[WORKER_HEADER])] += 1
        assert served.keys() == worker_pids(server)
        for pid, text in scrape(server).items():
            labels = {"model": "tab", "code": "200"}
            # Each worker counted only its own share; any one scrape shows the sum.
            assert sample_total(text, "gateway_requests_total", **labels) == served.total(), pid
            assert sample_total(text, "gateway_model_ready", model="tab") == 1
            assert sample_total(text, "gateway_inflight_requests", model="tab") == 0
            assert sample_total(text, "gateway_request_duration_seconds_count") == served.total()


def test_killed_worker_is_replaced_and_counts_survive(tmp_path: Path) -> None:
    store = classifier(tmp_path / "store").parent.parent
    with gateway(store, tmp_path, env=WORKERS) as server:
        every_worker_ready(server)
        sent = 0
        for _ in range(20):
            assert infer(server).status_code == 200
            sent += 1
        before = worker_pids(server)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        until(lambda: len(worker_pids(server) - before) == 1, "a replacement worker")
        (newcomer,) = worker_pids(server) - before
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "the new worker never served the model"
            response = infer(server)
            sent += response.status_code == 200
            if int(response.headers[WORKER_HEADER]) == newcomer and response.status_code == 200:
                break
        assert server.process.poll() is None
        for text in scrape(server).values():
            # The killed worker's counts stay in the sum; its in-flight gauge went with it.
            assert sample_total(text, "gateway_requests_total", model="tab", code="200") == sent
            assert sample_total(text, "gateway_inflight_requests", model="tab") == 0


class StopFirstWorker(threading.Thread):
    """Stops (SIGSTOP) the first worker of the gateway serving `store` as soon as it exists,
    before it has loaded anything, and resumes it `for_s` later."""

    def __init__(self, store: Path, for_s: float) -> None:
        super().__init__(daemon=True)
        self.store = str(store)
        self.for_s = for_s
        self.resumed_at = float("inf")

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for process in psutil.process_iter(["cmdline"]):
                if self.store not in " ".join(process.info["cmdline"] or ()):
                    continue
                with contextlib.suppress(psutil.Error):
                    for child in process.children():
                        if "spawn_main" in " ".join(child.cmdline()):
                            os.kill(child.pid, signal.SIGSTOP)
                            time.sleep(self.for_s)
                            os.kill(child.pid, signal.SIGCONT)
                            self.resumed_at = time.monotonic()
                            return
            time.sleep(0.01)


def test_ready_means_every_worker_has_loaded_its_models(tmp_path: Path) -> None:
    """A worker still loading takes its share of new connections (a model it has not loaded
    yet is answered 503), so the others answer readiness 503 until it has loaded. Before: the
    gateway said ready while one worker, stopped before loading, held its share."""
    store = classifier(tmp_path / "store").parent.parent
    stopper = StopFirstWorker(store, for_s=4.0)
    stopper.start()
    with gateway(store, tmp_path, env=WORKERS) as server:
        ready_at = time.monotonic()
        stopper.join()
        answers = answers_from_every_worker(
            server, lambda: httpx.get(f"{server.url}/v2/health/ready", timeout=10)
        )
    assert ready_at > stopper.resumed_at
    assert {pid: r.status_code for pid, r in answers.items()} == dict.fromkeys(answers, 200)


def test_repository_api_acts_on_every_worker(tmp_path: Path) -> None:
    store = tmp_path / "store"
    classifier(store)
    regressor(store)
    env = {**WORKERS, "GATEWAY_MANAGEMENT_TOKEN": TOKEN}
    with gateway(store, tmp_path, env=env) as server:
        every_worker_ready(server)

        def ready(model: str) -> dict[int, int]:
            answers = answers_from_every_worker(
                server, lambda: httpx.get(f"{server.url}/v2/models/{model}/ready")
            )
            return {pid: response.status_code for pid, response in answers.items()}

        assert set(ready("tab").values()) == {200}
        unloaded = httpx.post(f"{server.url}/v2/repository/models/tab/unload", headers=ADMIN)
        assert unloaded.status_code == 200
        # Answered once every worker applied it: no worker serves tab any more.
        assert set(ready("tab").values()) == {404}
        assert set(ready("reg").values()) == {200}

        grpc = triton_grpc.InferenceServerClient(server.grpc_address)
        try:
            grpc.load_model("tab", headers=ADMIN)
            assert set(ready("tab").values()) == {200}
            grpc.unload_model("reg", headers=ADMIN)
            assert set(ready("reg").values()) == {404}
        finally:
            grpc.close()

        # A replacement worker starts without what was unloaded, with what was loaded.
        before = worker_pids(server)
        os.kill(min(before), signal.SIGKILL)
        until(lambda: len(worker_pids(server) - before) == 1, "a replacement worker")
        (newcomer,) = worker_pids(server) - before

        def newcomer_ready() -> bool:
            response = httpx.get(f"{server.url}/v2/health/ready")
            return response.status_code == 200 and int(response.headers[WORKER_HEADER]) == newcomer

        until(newcomer_ready, "the replacement to be ready")
        every_worker_ready(server)
        assert ready("reg") == dict.fromkeys(worker_pids(server), 404)
        assert ready("tab") == dict.fromkeys(worker_pids(server), 200)


async def test_sigterm_drains_every_worker(tmp_path: Path) -> None:
    store = tmp_path / "store"
    slow_model(store)
    env = {**WORKERS, "GATEWAY_DRAIN_SECONDS": "30"}
    with gateway(store, tmp_path, env=env) as server:
        every_worker_ready(server)
        children = psutil.Process(server.process.pid).children(recursive=True)
        workers = worker_pids(server)
        async with httpx.AsyncClient(
            base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=128)
        ) as client:
            sent = [
                asyncio.create_task(client.post("/v2/models/slow/infer", json=SLOW_BODY))
                for _ in range(64)
            ]
            # Wait until the workers hold most of them (queued or computing), then signal.
            deadline = time.monotonic() + 30
            while True:
                assert time.monotonic() < deadline, "the workers never held the requests"
                text = (await client.get("/metrics")).text
                if sample_total(text, "gateway_inflight_requests", model="slow") >= 48:
                    break
                await asyncio.sleep(0.01)
            server.process.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*sent)
        assert [r.status_code for r in responses] == [200] * 64
        assert {int(r.headers[WORKER_HEADER]) for r in responses} == workers
        assert server.process.wait(timeout=60) == 0
        _gone, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], "processes outlived the supervisor"


def test_workers_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    store = classifier(tmp_path / "store").parent.parent
    with gateway(store, tmp_path, env=WORKERS) as server:
        every_worker_ready(server)
        workers = [psutil.Process(pid) for pid in worker_pids(server)]
        server.process.kill()
        server.process.wait()
        # Their control sockets close: each drains itself and exits.
        gone, alive = psutil.wait_procs(workers, timeout=60)
        assert alive == []
        # Not children of this process: psutil cannot read their exit status, only that they left.
        assert len(gone) == 2
