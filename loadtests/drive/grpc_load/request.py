"""One fixed gRPC call, and where a gRPC endpoint is when only the HTTP host is known."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
GRPC_DEFAULT_PORT = 8001
CHANNEL_OPTIONS = (
    # Each channel its own TCP connection, even for the same target in one process.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)


class GrpcLoadError(RuntimeError):
    """A worker failed to start, could not reach the target, or printed no result."""


@dataclass(frozen=True)
class GrpcRequest:
    """One fixed gRPC call: the same serialized message every time."""

    target: str
    """host:port"""
    body: bytes
    """The serialized request message (a ModelInferRequest for INFER_METHOD)."""
    method: str = INFER_METHOD
    metadata: tuple[tuple[str, str], ...] = ()


def target_for(http_host: str | None, explicit: str | None = None) -> str:
    """`explicit` (host:port) when given, else the HTTP host's name on gRPC's default port."""
    if explicit:
        return explicit.removeprefix("grpc://").removeprefix("http://")
    name = urllib.parse.urlsplit(http_host or "").hostname or "127.0.0.1"
    return f"{name}:{GRPC_DEFAULT_PORT}"
