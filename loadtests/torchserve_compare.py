"""Measures TorchServe direct against the gateway in front of it, both modes, with wrk.

    python -m loadtests.torchserve_compare --model-store model_store --model iris --body row.json \\
        --content-type application/json [--concurrency 32] [--duration 10] [--rounds 2]

Setups, each on fresh processes, in rounds (so slow drifts of a shared machine hit all alike):
- `direct`: clients call TorchServe; its batcher batches (the archive's batchSize/maxBatchDelay).
- `batched`: clients call the gateway; it batches and sends one `.npz` request per batch to
  TorchServe running with batchSize 1 (the gateway's default `torchserve_mode`).
- `forward`: clients call the gateway; it sends one request per row to TorchServe's batcher.
- `inprocess`: clients call the gateway serving the ONNX artifact itself (no TorchServe).
Prints one line per run and a summary (median throughput, p50/p99 of the best round).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deploy.torchserve.archive import build_archives
from deploy.torchserve.launcher import free_port, start_torchserve

SETUPS = ("direct", "batched", "forward", "inprocess")
WRK_SCRIPT = """
local body = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.method = "POST"
wrk.body = body:read("*a")
body:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local token = os.getenv("BENCH_TOKEN")
if token ~= nil and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format("BENCH %d %d %d %d %d\\n", summary.requests, errors, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class Result:
    setup: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds

    def line(self) -> str:
        return (
            f"{self.setup:9s} {self.throughput:8.0f} req/s  p50 {self.p50_ms:6.1f} ms  "
            f"p99 {self.p99_ms:6.1f} ms  errors {self.errors}"
        )


def run_wrk(
    setup: str, url: str, body: Path, content_type: str, token: str, concurrency: int, seconds: int
) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    env = {
        **os.environ,
        "BENCH_BODY": str(body),
        "BENCH_CONTENT_TYPE": content_type,
        "BENCH_TOKEN": token,
    }
    threads = min(2, concurrency)
    command = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "-s", script.name, url]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    finally:
        os.unlink(script.name)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            requests, errors, micros, p50, p99 = (int(field) for field in line.split()[1:])
            return Result(setup, requests, errors, micros / 1e6, p50 / 1000, p99 / 1000)
    raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")


@contextmanager
def gateway(store: Path, model: str, env: dict[str, str], log: Path) -> Iterator[str]:
    """`python -m service` on a free port; yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "service", "--model-store", str(store), "--port", str(port)]
    command += ["--models", model]
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GATEWAY_GRPC_PORT": str(free_port()),
        **env,
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=environment, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not _ready(url + "/v2/health/ready"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start; see {log}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def measure(setup: str, args: argparse.Namespace, archives: Path, work: Path) -> Result:
    def wrk(url: str, token: str = "", warmup_s: int = args.warmup) -> Result:
        run_wrk(setup, url, args.body, args.content_type, token, args.concurrency, warmup_s)
        return run_wrk(
            setup, url, args.body, args.content_type, token, args.concurrency, args.duration
        )

    path = f"/predictions/{args.model}"
    log = work / f"gateway-{setup}.log"
    if setup == "inprocess":
        with gateway(args.model_store, args.model, {"GATEWAY_BACKEND": "onnxruntime"}, log) as url:
            return wrk(url + path)
    batch_size = 1 if setup == "batched" else args.torchserve_batch_size
    with start_torchserve(
        archives, work / setup, [args.model], batch_size=batch_size, max_batch_delay_ms=5
    ) as torchserve:
        direct = torchserve.inference_url + path
        if setup == "direct":
            return wrk(direct, torchserve.token)
        # The JVM's JIT compiler burns CPU for the first ~10^4 requests; a gateway sends
        # TorchServe one request per batch, so it would take minutes to warm the JVM up. Warm
        # it with direct load first: every setup is measured on a JIT-compiled TorchServe, as
        # in a long-running deployment.
        run_wrk(
            setup,
            direct,
            args.body,
            args.content_type,
            torchserve.token,
            args.concurrency,
            args.warmup,
        )
        env = {
            "GATEWAY_BACKEND": "torchserve",
            "GATEWAY_TORCHSERVE_URL": torchserve.inference_url,
            "GATEWAY_TORCHSERVE_KEY_FILE": str(torchserve.key_file),
            "GATEWAY_TORCHSERVE_MODE": setup,
            "GATEWAY_INSTANCES": str(args.gateway_instances),
        }
        with gateway(args.model_store, args.model, env, log) as url:
            return wrk(url + path, warmup_s=5)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.torchserve_compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-store", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--body", type=Path, required=True, help="request body file")
    parser.add_argument("--content-type", default="application/json")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--warmup", type=int, default=20, help="seconds of load before each run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--gateway-instances", type=int, default=1)
    parser.add_argument(
        "--torchserve-batch-size",
        type=int,
        help="TorchServe batchSize for direct/forward (default: the archive's model-config)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found (apt-get install wrk)")
    setups = [setup.strip() for setup in args.setups.split(",") if setup.strip()]
    work = Path(tempfile.mkdtemp(prefix="compare-"))
    archives = work / "archives"
    build_archives(args.model_store, archives, [args.model])
    results: dict[str, list[Result]] = {setup: [] for setup in setups}
    for round_number in range(args.rounds):
        for setup in setups:
            result = measure(setup, args, archives, work)
            results[setup].append(result)
            print(f"round {round_number + 1}: {result.line()}", flush=True)
    print(f"\n{args.model}, c={args.concurrency}, {args.duration} s per run, {os.cpu_count()} CPUs")
    for setup, runs in results.items():
        best = max(runs, key=lambda result: result.throughput)
        median = statistics.median(result.throughput for result in runs)
        print(f"{setup:9s} median {median:8.0f} req/s   best: {best.line()}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
