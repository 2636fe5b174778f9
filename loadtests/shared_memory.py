"""A 4 MB FP32 input through system shared memory, against the same input in the request:
binary data over HTTP and raw contents over gRPC.

    python -m loadtests.shared_memory --requests 60

Builds a one-model store (ONNX ReduceSum: x FP32 [1, 1048576] -> y FP32 [1, 1], so the answer
is tiny and the input's way in is what is timed), starts `python -m service` with
GATEWAY_SHARED_MEMORY on, and calls it one request at a time with stock tritonclient, the
modes interleaved round by round so that a busy machine slows them alike:

- `http-binary`: the tensor as binary data after the JSON header;
- `grpc-raw`: the tensor as raw_input_contents;
- `http-shm`, `grpc-shm`: the tensor in a registered region (`set_shared_memory`);
- `http-shm+write`, `grpc-shm+write`: the same with the client's copy of the tensor into the
  region inside the timed call (a producer that cannot compute straight into the region).

Prints the p50 and mean milliseconds per call of each mode and the ratios of the plain modes'
p50 to shared memory's, as JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.systems import procs

FLOATS = 1024 * 1024
"""4 MiB of FP32."""
MODEL = "sum4mb"


def build_store(root: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
        MODEL,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FLOATS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = root / MODEL / "1" / "model.onnx"
    path.parent.mkdir(parents=True)
    onnx.save(model, path)
    return root


def measure(requests: int, warmup: int, work: Path) -> dict[str, Any]:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    import tritonclient.utils.shared_memory as shm

    store = build_store(work / "store")
    port, grpc_port = procs.free_port(), procs.free_port()
    command = [sys.executable, "-m", "service", "--model-store", str(store), "--port", str(port)]
    env = {"GATEWAY_GRPC_PORT": str(grpc_port), "GATEWAY_SHARED_MEMORY": "true"}
    process = procs.spawn(command, work / "gateway.log", env)
    x = np.random.default_rng(0).random((1, FLOATS), dtype=np.float32)
    expected = float(x.sum())
    key = f"/gateway-bench-{uuid.uuid4().hex[:12]}"
    region = shm.create_shared_memory_region("bench_in", key, x.nbytes, create_only=True)
    try:
        procs.wait_ready([f"http://127.0.0.1:{port}/v2/health/ready"], process, 120)
        http = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        http.unregister_system_shared_memory()
        http.register_system_shared_memory("bench_in", key, x.nbytes)
        shm.set_shared_memory_region(region, [x])

        def call(client: Any, module: Any, placed: bool, write: bool) -> Callable[[], float]:
            def run() -> float:
                item = module.InferInput("x", [1, FLOATS], "FP32")
                if placed:
                    if write:
                        shm.set_shared_memory_region(region, [x])
                    item.set_shared_memory("bench_in", x.nbytes)
                else:
                    item.set_data_from_numpy(x)
                answer = client.infer(MODEL, [item])
                return float(answer.as_numpy("y")[0, 0])

            return run

        modes = {
            "http-binary": call(http, httpclient, False, False),
            "grpc-raw": call(grpc, grpcclient, False, False),
            "http-shm": call(http, httpclient, True, False),
            "grpc-shm": call(grpc, grpcclient, True, False),
            "http-shm+write": call(http, httpclient, True, True),
            "grpc-shm+write": call(grpc, grpcclient, True, True),
        }
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for round_ in range(warmup + requests):
            for mode, run in modes.items():
                started = time.perf_counter()
                got = run()
                elapsed = time.perf_counter() - started
                if abs(got - expected) > 1e-3 * abs(expected):
                    raise AssertionError(f"{mode}: answered {got}, expected {expected}")
                if round_ >= warmup:
                    times[mode].append(elapsed * 1000)
        http.unregister_system_shared_memory()
        http.close()
        grpc.close()
    finally:
        shm.destroy_shared_memory_region(region)
        procs.stop(process)
    p50 = {mode: statistics.median(values) for mode, values in times.items()}
    return {
        "input_bytes": x.nbytes,
        "requests": requests,
        "p50_ms": {mode: round(value, 3) for mode, value in p50.items()},
        "mean_ms": {mode: round(statistics.fmean(values), 3) for mode, values in times.items()},
        "ratio_p50": {
            "http-binary / http-shm": round(p50["http-binary"] / p50["http-shm"], 2),
            "grpc-raw / grpc-shm": round(p50["grpc-raw"] / p50["grpc-shm"], 2),
            "http-binary / http-shm+write": round(p50["http-binary"] / p50["http-shm+write"], 2),
            "grpc-raw / grpc-shm+write": round(p50["grpc-raw"] / p50["grpc-shm+write"], 2),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60, help="timed calls per mode")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per mode first")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shm-bench-") as work:
        result = measure(args.requests, args.warmup, Path(work))
    for mode in result["p50_ms"]:
        print(
            f"{mode:>16}: p50 {result['p50_ms'][mode]:8.3f} ms  mean {result['mean_ms'][mode]:8.3f} ms"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
