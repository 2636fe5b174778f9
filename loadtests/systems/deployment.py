"""Systems under test: how each server is started, and the request each system gets per model.

A *server* is one set of processes (the gateway, TorchServe, a peer); it may expose several
*systems* (the gateway's V2 JSON, V2 binary and `/predictions` routes). Every server is a context
manager yielding a `Deployment`; leaving it stops every process it started.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.drive.catalog import BenchModel
from loadtests.drive.grpc_load.request import GrpcRequest
from loadtests.drive.wrk import Request

Target = Request | GrpcRequest
"""What a system is loaded with: an HTTP request (wrk) or a gRPC call (grpc_load)."""


class Unavailable(RuntimeError):
    """The server cannot run here (not installed, a dependency missing); the reason says why."""


@dataclass(frozen=True)
class Context:
    store: Path
    models: Sequence[BenchModel]
    work_dir: Path
    """Logs and generated configuration go here."""
    device: str = "cpu"
    install: bool = True
    """Create missing peer venvs (network); when False, missing peers are skipped."""
    startup_timeout_s: float = 300.0

    @property
    def model_names(self) -> list[str]:
        return [model.name for model in self.models]


@dataclass
class ServerInfo:
    name: str
    pid: int
    cold_start_s: float
    """Process start to every model ready."""
    settings: str
    rss_ready_mb: float = 0.0
    rss_loaded_mb: float = 0.0
    """Resident memory of the process tree once ready, and right after its load sweep."""


@dataclass
class Deployment:
    servers: list[ServerInfo] = field(default_factory=list)
    targets: dict[str, dict[str, Target]] = field(default_factory=dict)
    """system -> model -> the request wrk posts, or the call grpc_load makes."""
    metrics: dict[str, str] = field(default_factory=dict)
    """system -> base URL of a gateway whose /metrics splits its time (our systems only)."""
    processes: dict[str, list[int]] = field(default_factory=dict)
    """system -> the root processes whose trees serve it, for its CPU per request; a system
    absent here is served by the deployment's only server (see `pids_of`)."""

    def pids_of(self, system: str) -> list[int]:
        """The root processes that serve `system`; empty when that is unknown (several
        servers, none named), and then its CPU is not measured."""
        if system in self.processes:
            return self.processes[system]
        return [self.servers[0].pid] if len(self.servers) == 1 else []


@dataclass(frozen=True)
class ServerKind:
    name: str
    systems: tuple[str, ...]
    start: Callable[[Context], AbstractContextManager[Deployment]]
