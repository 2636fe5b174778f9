"""`GATEWAY_WORKERS=2`: a worker that stops answering (SIGSTOP: it keeps its share of the ports)
is noticed by its missing heartbeats, killed and replaced; readiness says so meanwhile, and
the log says why."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.servers import gateway
from tests.tiny_models import classifier

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

HANG_TIMEOUT_S = 2.0
TAB_BODY = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]
}


def worker_pids(supervisor: int) -> set[int]:
    pids = set()
    for child in psutil.Process(supervisor).children():
        with contextlib.suppress(psutil.Error):
            if "spawn_main" in " ".join(child.cmdline()):
                pids.add(child.pid)
    return pids


def probe(url: str) -> int:
    """A new connection each time (the kernel spreads them over the workers); 0: no answer."""
    try:
        with httpx.Client(timeout=0.5) as client:
            return client.get(f"{url}/v2/health/ready").status_code
    except httpx.HTTPError:
        return 0


def test_a_stopped_worker_is_killed_replaced_and_reported(tmp_path: Path) -> None:
    """Before: a worker stopped for 10 s kept its share of the port and nothing noticed (3 of
    10 external health probes timed out, no log line)."""
    store = tmp_path / "store"
    classifier(store)
    env = {
        "GATEWAY_WORKERS": "2",
        "GATEWAY_WORKER_HEARTBEAT_S": "0.25",
        "GATEWAY_WORKER_HANG_TIMEOUT_S": str(HANG_TIMEOUT_S),
    }
    with gateway(store, tmp_path, env=env) as server:
        supervisor = server.process.pid
        deadline = time.monotonic() + 60
        # Both workers ready (serving on the ports), as the supervisor logs it.
        while not all(f'"worker {slot} ready"' in server.output() for slot in (0, 1)):
            assert time.monotonic() < deadline, "two workers did not become ready"
            time.sleep(0.1)
        workers = worker_pids(supervisor)
        assert len(workers) == 2
        stopped = min(workers)
        os.kill(stopped, signal.SIGSTOP)
        stopped_at = time.monotonic()
        answers: list[tuple[float, int]] = []
        replaced_after: float | None = None
        try:
            while time.monotonic() - stopped_at < 30:
                answers.append((time.monotonic() - stopped_at, probe(server.url)))
                current = worker_pids(supervisor)
                if replaced_after is None and stopped not in current and len(current) == 2:
                    replaced_after = time.monotonic() - stopped_at
                # Every worker ready again: twenty probes in a row answer 200.
                back = replaced_after is not None and answers[-1][1] == 200
                if back and all(probe(server.url) == 200 for _ in range(20)):
                    break
                time.sleep(0.05)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        served = httpx.post(f"{server.url}/v2/models/tab/infer", json=TAB_BODY, timeout=10)
        output = server.output()
    not_ready = [at for at, code in answers if code == 503]
    unanswered = [at for at, code in answers if code == 0]
    print(
        f"stopped worker replaced after {replaced_after} s; {len(answers)} probes: "
        f"{len(not_ready)} x 503, {len(unanswered)} unanswered (last at "
        f"{max(unanswered, default=0):.1f} s)"
    )
    assert replaced_after is not None and replaced_after < HANG_TIMEOUT_S + 5
    assert "sent no heartbeat" in output
    assert not_ready, "readiness never said a worker was gone"
    assert max(unanswered, default=0.0) < HANG_TIMEOUT_S + 5
    assert served.status_code == 200
