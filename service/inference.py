"""Protocol-neutral inference requests and results: what every transport adapter decodes into
and encodes from. Nothing here knows HTTP or gRPC.

An adapter builds an `InferenceRequest` from what it knows before reading the body (protocol,
model, version, credentials, a transport deadline) plus a `decode` step that reads and parses
the body. The data plane looks the model up first, so an unknown model is 404 whatever the body
holds, and then calls `decode` with the model's processor (a TorchServe JSON body means one
instance or a list of them depending on the model's task).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from service.feeds import Feed
from service.processing import ModelInputs, Processor
from service.repository import LoadedModel

if TYPE_CHECKING:
    from service.native.frames import HandlerRequest

WireT = TypeVar("WireT")
"""Whatever the adapter's encoder needs back from its decoder (request id, requested outputs,
whether to answer with a list)."""


@dataclass(frozen=True, slots=True)
class DecodedBody(Generic[WireT]):
    inputs: ModelInputs
    wire: WireT
    timeout_ms: float | None = None
    """A deadline the protocol carries in the body (the V2 `timeout` parameter)."""


Decoder = Callable[[Processor], Awaitable[DecodedBody[WireT]]]


@dataclass(frozen=True, slots=True)
class InferenceRequest(Generic[WireT]):
    protocol: str
    """Metric and log label: `v2`, `grpc`, `torchserve`, `v1`."""
    model: str
    version: str | None
    decode: Decoder[WireT]
    credentials: str | None = None
    """The bearer token the client presented, if any."""
    timeout_ms: float | None = None
    """A deadline the transport carries (a header, the gRPC deadline)."""
    disconnected: Callable[[], Awaitable[None]] | None = None
    """Returns once the client has gone away (HTTP); None where the transport cancels the
    handler itself (gRPC)."""
    trace_context: Mapping[str, str] | None = None
    """The caller's `traceparent` / `tracestate`, when it sent them."""


@dataclass(frozen=True, slots=True)
class InferenceResult(Generic[WireT]):
    model: LoadedModel
    outputs: Feed
    body: DecodedBody[WireT]


@dataclass(frozen=True, slots=True)
class HandlerCall:
    """A request for a TorchServe archive's own handler (`torchserve-native`): the adapter
    reads the body into TorchServe's request form; nothing of it is interpreted here."""

    protocol: str
    model: str
    version: str | None
    read: Callable[[], Awaitable[HandlerRequest]]
    credentials: str | None = None
    timeout_ms: float | None = None
    disconnected: Callable[[], Awaitable[None]] | None = None
    trace_context: Mapping[str, str] | None = None
