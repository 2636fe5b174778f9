"""HTTP load from the standard library alone: where wrk is not installed (a lent GPU machine).

Worker processes, each keeping its share of the `concurrency` keep-alive connections busy back
to back from one thread per connection (`http.client`), start at one agreed moment and record
every latency into the same log-bucketed histogram the gRPC workers use; the parent merges them
into a `WrkResult`, as wrk's results have it. Python threads cost more client CPU per request
than wrk, so compare its figures with each other, not with wrk's.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
import urllib.parse
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from loadtests.drive.grpc_load.histogram import Histogram, WorkerResult, merge, split
from loadtests.drive.wrk import Request, WrkResult

START_DELAY_S = 1.5
"""Every worker process starts loading this long after the parent asked (time for the spawned
processes to import this module), at the same moment: `time.monotonic` is one clock for every
process on Linux."""


def _connection(url: urllib.parse.SplitResult, timeout_s: float) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(
        url.hostname or "127.0.0.1", url.port or 80, timeout=timeout_s
    )


def _user(
    request: Request,
    start_at: float,
    seconds: float,
    timeout_s: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    url = urllib.parse.urlsplit(request.url)
    path = url.path + (f"?{url.query}" if url.query else "")
    connection = _connection(url, timeout_s)
    clock = time.monotonic
    deadline = start_at + seconds
    time.sleep(max(0.0, start_at - clock()))
    failed = 0
    try:
        while clock() < deadline:
            sent = clock()
            try:
                connection.request("POST", path, request.body, request.headers)
                with connection.getresponse() as response:
                    response.read()
                    failed += response.status != 200
            except (OSError, http.client.HTTPException):
                failed += 1
                connection.close()
                connection = _connection(url, timeout_s)
            latencies.append((clock() - sent) * 1e6)
    finally:
        connection.close()
        errors.append(failed)


def _worker(
    request: Request, connections: int, start_at: float, seconds: float, timeout_s: float
) -> WorkerResult:
    """One process: `connections` threads from `start_at` (`time.monotonic`) on, for `seconds`."""
    cpu_before = time.process_time()
    latencies: list[float] = []
    errors: list[int] = []
    threads = [
        threading.Thread(
            target=_user, args=(request, start_at, seconds, timeout_s, latencies, errors)
        )
        for _ in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return WorkerResult(
        requests=len(latencies),
        errors=sum(errors),
        seconds=time.monotonic() - start_at,
        cpu_s=time.process_time() - cpu_before,
        histogram=Histogram.of(latencies),
        error_codes={},
    )


def run(
    request: Request,
    concurrency: int,
    seconds: float,
    *,
    processes: int | None = None,
    timeout_s: float = 30.0,
) -> WrkResult:
    """Keep `concurrency` requests in flight for `seconds`; processes default to one per core
    (at most one per connection)."""
    parts = split(concurrency, processes or max(1, min(concurrency, os.cpu_count() or 1)))
    with ProcessPoolExecutor(len(parts), mp_context=get_context("spawn")) as pool:
        start_at = time.monotonic() + START_DELAY_S
        futures = [
            pool.submit(_worker, request, share, start_at, seconds, timeout_s) for share in parts
        ]
        merged = merge([future.result() for future in futures])
    return WrkResult(merged.requests, merged.seconds, merged.errors, merged.latency_ms)
