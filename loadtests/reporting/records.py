"""The benchmark's result records: what `loadtests.bench` writes and `loadtests.report` reads.

Pydantic models rather than dicts, so a renamed or missing figure fails where it is made, not as
a KeyError deep in a table. `Results.model_validate_json` reads a saved run (older runs too:
unknown keys are ignored, newer figures default to absent); `Results.dump` writes it back as the
same plain JSON (`docs/benchmarks.json`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Latency(Record):
    """Client-side latency of one point, ms."""

    mean: float
    p50: float
    p90: float | None = None
    p95: float | None = None
    p99: float
    p99_9: float | None = Field(default=None, alias="p99.9")
    max: float | None = None


class ServerSplit(Record):
    """The gateway's own view of one point, from two scrapes of its `/metrics` (ms). The
    per-batch parts are absent where the gateway does not export their histograms."""

    request_mean_ms: float | None = None
    request_p50_ms: float | None = None
    request_p99_ms: float | None = None
    queue_mean_ms: float | None = None
    compute_mean_ms: float | None = None
    """Per batch: the whole backend step, thread hand-off included."""
    input_mean_ms: float | None = None
    backend_mean_ms: float | None = None
    output_mean_ms: float | None = None
    handoff_mean_ms: float | None = None
    """Per batch: input preparation, the runtime call alone, output split, the thread hop."""
    mean_batch_size: float | None = None
    batches: int | None = None
    batch_sizes: dict[str, float] = Field(default_factory=dict)
    """Batches formed, by `gateway_batch_size` bucket: upper bound (rows) -> batches."""

    @property
    def formed_batch(self) -> int | None:
        """The batch size this point formed: its mean rows per batch, rounded."""
        if self.mean_batch_size is None or self.mean_batch_size <= 0:
            return None
        return max(1, round(self.mean_batch_size))


class Point(Record):
    """One system, model and concurrency: the median of its repeated runs."""

    system: str
    model: str
    concurrency: int
    throughput: float
    latency_ms: Latency
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    generator: str | None = None
    client_cpu_us_per_call: float | None = None
    error_codes: dict[str, int] | None = None
    server_ms: ServerSplit | None = None
    server_cpu_ms: float | None = None
    """The server's CPU time per answered request (ms): utime + stime of every process serving
    the system (the whole tree: JVM and workers, handler and gateway workers) over the
    measured run, divided by the requests answered without error."""
    repeats: list[float] | None = None
    """Every run's throughput, when the point was measured more than once."""


class RawPoint(Record):
    """ONNX Runtime in-process at one batch size and spinning setting."""

    batch: int
    calls: int
    items_per_s: float
    p50_ms: float
    p99_ms: float
    spinning: bool = True
    round: int | str = 1
    """1 and 2: before and after a model's points; 'formed': at a batch size a server formed."""
    idle_gap_ms: float = 0.0
    """0: calls back to back. Else the median idle before each call (paced, as a server's calls
    at c=1 are); its items/s then counts the calls' own time only."""

    @property
    def paced(self) -> bool:
        return self.idle_gap_ms > 0

    @property
    def mean_ms(self) -> float:
        """Mean time per call (its items/s turned back into time)."""
        return self.batch * 1000.0 / self.items_per_s if self.items_per_s > 0 else float("nan")


class RawModel(Record):
    batches: list[RawPoint] = Field(default_factory=list)
    limit_items_per_s: float = 0.0
    limit_batch: int = 0
    limit_spinning: bool = True
    batch1_p50_ms: float | None = None
    batch1_paced_p50_ms: float | None = None
    """The fastest batch-1 p50 of the paced calls (each after an idle gap), None: not paced."""

    def at(self, batch: int) -> RawPoint | None:
        """The fastest back-to-back measurement at exactly this batch size (over settings and
        rounds)."""
        found = [p for p in self.batches if p.batch == batch and not p.paced]
        return max(found, key=lambda p: p.items_per_s) if found else None

    def summarize(self) -> None:
        """The limit (best items/s of any back-to-back point), the fastest batch-1 p50 back to
        back and the fastest paced."""
        hot = [p for p in self.batches if not p.paced]
        best = max(hot, key=lambda p: p.items_per_s)
        self.limit_items_per_s = round(best.items_per_s, 2)
        self.limit_batch = best.batch
        self.limit_spinning = best.spinning
        self.batch1_p50_ms = _rounded_p50(_fastest(p for p in hot if p.batch == 1))
        self.batch1_paced_p50_ms = _rounded_p50(self.fastest_paced())

    def fastest_paced(self) -> RawPoint | None:
        """The paced batch-1 call with the lowest p50 (None: the run paced none)."""
        return _fastest(p for p in self.batches if p.paced and p.batch == 1)


def _fastest(points: Iterable[RawPoint]) -> RawPoint | None:
    return min(points, key=lambda p: p.p50_ms, default=None)


def _rounded_p50(point: RawPoint | None) -> float | None:
    return round(point.p50_ms, 4) if point else None


class ServerRecord(Record):
    name: str = ""
    """Also its key in `Results.servers`."""
    pid: int = 0
    cold_start_s: float
    settings: str = ""
    rss_ready_mb: float
    rss_loaded_mb: float = 0.0
    systems: list[str] = Field(default_factory=list)


class Skipped(Record):
    server: str
    systems: list[str]
    reason: str


class Failure(Record):
    system: str
    model: str
    error: str


class SkippedModel(Record):
    model: str
    reason: str


class CeilingRow(Record):
    """The gRPC generator against a do-nothing server."""

    generator: str
    concurrency: int
    throughput: float
    p50_ms: float
    client_cpu_us_per_call: float
    target: str = ""
    processes: int = 1
    p99_ms: float | None = None
    errors: int = 0


class GeneratorCeiling(Record):
    engine: str
    server: str
    points: list[CeilingRow]
    measured: str | None = None
    note: str | None = None


class Machine(Record):
    date: str
    cpu: str
    logical_cores: int | None = None
    physical_cores: int | None = None
    memory_gib: float | None = None
    os: str = ""
    device: str = "cpu"
    gpu: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    load_average_start: list[float] = Field(default_factory=list)
    load_average_end: list[float] | None = None


class Config(Record):
    models: list[str]
    systems: list[str] = Field(default_factory=list)
    concurrency: list[int] = Field(default_factory=list)
    duration_s: float = 0.0
    warmup_s: float = 0.0
    repeat: int = 1
    raw_batches: list[int] = Field(default_factory=list)
    device: str = "cpu"
    slo_p99_ms: float = 15.0
    grpc_generator: str = "auto"
    command: str = "python -m loadtests.bench"
    order: str | None = None
    wall_s: float | None = None


class Baseline(Record):
    """What a new run keeps of the previous recorded run (its REST points)."""

    date: str
    points: list[Point]


class GoalRow(Record):
    """One goal for one model and pair of systems: the figures and the verdict."""

    goal: str
    model: str
    ours: str
    theirs: str
    target: float
    unit: str
    mine: float | None = None
    other: float | None = None
    value: float | None = None
    met: bool | None = None
    """None: not measured (a figure missing)."""
    own_ms: float | None = None
    note: str | None = None


class Results(Record):
    machine: Machine
    config: Config
    raw: dict[str, RawModel] = Field(default_factory=dict)
    servers: dict[str, ServerRecord] = Field(default_factory=dict)
    points: list[Point] = Field(default_factory=list)
    failures: list[Failure] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)
    skipped_models: list[SkippedModel] = Field(default_factory=list)
    grpc_generator: GeneratorCeiling | None = None
    baseline: Baseline | None = None
    goals: list[GoalRow] = Field(default_factory=list)

    def dump(self) -> dict[str, Any]:
        """Plain JSON data, absent figures left out (as the dict-built files had them)."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return data
