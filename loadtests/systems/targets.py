"""The request each system is loaded with, per model and route."""

from __future__ import annotations

from collections.abc import Sequence

from loadtests.drive.catalog import BenchModel
from loadtests.drive.grpc_load.request import GrpcRequest
from loadtests.drive.wrk import Request


def v2_requests(base: str, model: BenchModel, *, binary: bool) -> Request:
    if not binary:
        url = f"{base}/v2/models/{model.name}/infer"
        return Request(url, model.v2_json, {"Content-Type": "application/json"})
    return v2_binary_request(base, model.name, model.v2_binary)


def v2_binary_request(base: str, name: str, body: tuple[bytes, int]) -> Request:
    """A V2 binary-extension request to model `name`: `body` is (bytes, JSON header length)."""
    data, header_length = body
    return Request(
        f"{base}/v2/models/{name}/infer",
        data,
        {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_length),
        },
    )


def grpc_request(target: str, model: BenchModel) -> GrpcRequest:
    """ModelInfer with the same tensors as the V2 binary body, as raw_input_contents."""
    return GrpcRequest(target, model.v2_grpc)


def predictions_request(base: str, model: BenchModel, token: str | None = None) -> Request:
    body, content_type = model.native
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return Request(f"{base}/predictions/{model.name}", body, headers)


def ready_urls(base: str, models: Sequence[BenchModel]) -> list[str]:
    return [f"{base}/v2/health/ready", *(f"{base}/v2/models/{m.name}/ready" for m in models)]
