"""What the attack tests measure on the server process: resident memory from `/proc`, and the
health probe's latency while the attack runs."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

MB = 1024 * 1024
STARTS_WITHIN_S = 30.0
"""How long the probe process may take to start (a fresh interpreter importing httpx)."""
SETTLES_WITHIN = 1.10
"""After an attack, resident memory comes back to within 10 % of where it started."""


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_bytes(pid: int) -> int:
    return _status_kb(pid, "VmRSS") * 1024


def settled_rss(pid: int, target: int, timeout_s: float = 5.0) -> int:
    """The process's resident memory once it is at most `target`, or when `timeout_s` has
    passed (memory freed after a request is given back a moment later: service.memory)."""
    deadline = time.monotonic() + timeout_s
    while (rss := rss_bytes(pid)) > target and time.monotonic() < deadline:
        time.sleep(0.1)
    return rss


class PeakRss:
    """The process's peak resident memory over a block, above its resident memory at the
    start: the kernel's high-water mark (`VmHWM`), reset on entry through `clear_refs`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = 0
        self.peak = 0

    def __enter__(self) -> PeakRss:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.before = rss_bytes(self.pid)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.peak = _status_kb(self.pid, "VmHWM") * 1024

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / MB


def _probe(url: str, interval_s: float, timeout_s: float, stop: Any, results: Any) -> None:
    """The probe process: says it is ready, probes until `stop` is set, sends the latencies."""
    latencies: list[float] = []
    with httpx.Client(timeout=timeout_s) as client:
        results.send("ready")
        while not stop.is_set():
            started = time.monotonic()
            try:
                ok = client.get(url).status_code == 200
            except httpx.HTTPError:
                ok = False
            elapsed = time.monotonic() - started
            latencies.append(elapsed if ok else max(elapsed, timeout_s))
            stop.wait(interval_s)
    results.send(latencies)


class HealthProbe:
    """Calls `/v2/health/live` every `interval_s` for the length of a block; the slowest answer
    is `worst_s` (a probe that fails or times out counts as its timeout).

    The probe runs in a process of its own, so that only the server's answer is timed: from a
    thread of the test process, the test's own work (an event loop driving 3,000 gRPC calls)
    could hold it up as well. One full run saw a 1.09 s probe in that burst test; alone, the
    same test's slowest probe took 22-27 ms in three runs.
    """

    def __init__(self, url: str, interval_s: float = 0.05, timeout_s: float = 5.0) -> None:
        self.url = f"{url}/v2/health/live"
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.latencies: list[float] = []
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results, child = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_probe,
            args=(self.url, interval_s, timeout_s, self._stop, child),
            daemon=True,
        )

    def __enter__(self) -> HealthProbe:
        self._process.start()
        if not self._results.poll(STARTS_WITHIN_S) or self._results.recv() != "ready":
            self._process.kill()
            raise RuntimeError(f"the health probe did not start within {STARTS_WITHIN_S:g} s")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._results.poll(self.timeout_s + STARTS_WITHIN_S):
            self.latencies = self._results.recv()
        self._process.join(STARTS_WITHIN_S)
        if self._process.is_alive():
            self._process.kill()

    @property
    def worst_s(self) -> float:
        return max(self.latencies, default=0.0)


def repository_index(url: str, token: str) -> dict[str, dict[str, str]]:
    """The gateway's repository index, by model name (the management token's call)."""
    response = httpx.post(
        f"{url}/v2/repository/index", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    response.raise_for_status()
    return {entry["name"]: entry for entry in response.json()}
