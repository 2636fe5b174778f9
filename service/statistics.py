"""Per model version statistics in Triton's form (the statistics extension), fed by the same
calls that feed the Prometheus series (`service.metrics`).

Triton's meanings: `success`/`fail` count requests and their whole duration; `queue` and the
three `compute_*` parts count successful requests, each request carrying its batch's times;
`batch_stats` count batches per batch size; `inference_count` counts rows, `execution_count`
batches; `last_inference` is in milliseconds since the epoch. Under `GATEWAY_WORKERS=N` each
worker keeps its own (the answering worker's figures).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from service.backends.base import BatchTiming

_NS = 1_000_000_000


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += round(seconds * _NS) * count

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class BatchStatistics:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class ModelStatistics:
    name: str
    version: str
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, BatchStatistics] = field(default_factory=dict)

    def request_done(self, succeeded: bool, seconds: float) -> None:
        (self.success if succeeded else self.fail).add(seconds)
        self.last_inference_ms = int(time.time() * 1000)

    def batch_started(self, queue_seconds: Sequence[float]) -> None:
        for seconds in queue_seconds:
            self.queue.add(seconds)

    def batch_timed(self, timing: BatchTiming) -> None:
        parts = (timing.input_s + timing.handoff_s, timing.backend_s, timing.output_s)
        requests = timing.requests
        self.compute_input.add(parts[0], requests)
        self.compute_infer.add(parts[1], requests)
        self.compute_output.add(parts[2], requests)
        self.inference_count += timing.rows
        self.execution_count += 1
        batch = self.batches.setdefault(timing.rows, BatchStatistics())
        batch.compute_input.add(parts[0])
        batch.compute_infer.add(parts[1])
        batch.compute_output.add(parts[2])

    def as_triton(self) -> dict[str, Any]:
        """Triton's JSON form (its HTTP answer; the gRPC answer is parsed from it)."""
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
                "cache_hit": Duration().as_dict(),
                "cache_miss": Duration().as_dict(),
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": batch.compute_input.as_dict(),
                    "compute_infer": batch.compute_infer.as_dict(),
                    "compute_output": batch.compute_output.as_dict(),
                }
                for size, batch in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
