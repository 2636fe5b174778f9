"""Before loading a gRPC endpoint: wait until it serves, and check one call answers."""

from __future__ import annotations

import time
from typing import Any

from loadtests.drive.grpc_load.request import CHANNEL_OPTIONS, INFER_METHOD, GrpcRequest


def check(request: GrpcRequest, timeout_s: float = 60.0) -> str | None:
    """One call before the sweep: None when it answers OK with outputs, else what went wrong."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb

    with grpc.insecure_channel(request.target, options=list(CHANNEL_OPTIONS)) as channel:
        call = channel.unary_unary(request.method)
        try:
            answer = call(request.body, timeout=timeout_s, metadata=request.metadata or None)
        except grpc.RpcError as error:
            return f"gRPC {error.code().name}: {error.details()}"  # type: ignore[attr-defined]
    if request.method == INFER_METHOD:
        response = pb.ModelInferResponse.FromString(answer)
        if not response.outputs or len(response.raw_output_contents) != len(response.outputs):
            return f"answer without raw outputs: {str(response)[:300]}"
    return None


def wait_serving(target: str, timeout_s: float, process: Any = None) -> float:
    """Poll the standard health service until it says SERVING; return the seconds it took."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    started = time.monotonic()
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server exited with code {process.returncode} before gRPC")
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - started
            except grpc.RpcError:
                pass
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"gRPC {target} not SERVING after {timeout_s:.0f} s")
            time.sleep(0.05)
