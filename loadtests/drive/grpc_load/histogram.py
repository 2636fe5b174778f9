"""What the gRPC generators report: latencies in a log-bucketed histogram (1 % wide buckets), one
result line per worker, and the merge of every worker's result into one `GrpcResult`."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loadtests.drive.grpc_load.request import GrpcLoadError
from loadtests.drive.wrk import WrkResult

MARK = "GRPC_RESULT "
BUCKET_GROWTH = 1.01
"""Histogram bucket i holds latencies in [1.01**i, 1.01**(i+1)) microseconds: 1 % resolution."""
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p99.9", 99.9))


def bucket_of(latency_us: float) -> int:
    return int(math.log(max(latency_us, 1.0), BUCKET_GROWTH))


@dataclass
class Histogram:
    counts: Counter[int]
    total_us: float = 0.0
    max_us: float = 0.0

    @classmethod
    def of(cls, latencies_us: Iterable[float]) -> Histogram:
        values = list(latencies_us)
        return cls(
            Counter(bucket_of(v) for v in values),
            float(sum(values)),
            max(values, default=0.0),
        )

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: Histogram) -> Histogram:
        return Histogram(
            self.counts + other.counts,
            self.total_us + other.total_us,
            max(self.max_us, other.max_us),
        )

    def percentile_us(self, q: float) -> float:
        """The geometric middle of the bucket holding the q-th percentile (nearest rank)."""
        count = self.count
        if count == 0:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * count))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return float(min(BUCKET_GROWTH ** (bucket + 0.5), self.max_us))
        return self.max_us

    def latency_ms(self) -> dict[str, float]:
        """mean, p50, p90, p95, p99, p99.9, max, as WrkResult has them."""
        count = self.count
        out = {"mean": self.total_us / count / 1000.0 if count else 0.0}
        out.update({name: self.percentile_us(q) / 1000.0 for name, q in PERCENTILES})
        out["max"] = self.max_us / 1000.0
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "buckets": {str(k): v for k, v in sorted(self.counts.items())},
            "total_us": self.total_us,
            "max_us": self.max_us,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        return cls(
            Counter({int(k): int(v) for k, v in data["buckets"].items()}),
            float(data["total_us"]),
            float(data["max_us"]),
        )


@dataclass(frozen=True)
class WorkerResult:
    requests: int
    errors: int
    seconds: float
    cpu_s: float
    """The worker's own user + system CPU time during the measured run."""
    histogram: Histogram
    error_codes: dict[str, int]

    def to_line(self) -> str:
        return MARK + json.dumps(
            {
                "requests": self.requests,
                "errors": self.errors,
                "seconds": self.seconds,
                "cpu_s": self.cpu_s,
                "latency": self.histogram.to_json(),
                "error_codes": self.error_codes,
            }
        )


def parse_worker(output: str) -> WorkerResult:
    for line in output.splitlines():
        if line.startswith(MARK):
            data: dict[str, Any] = json.loads(line[len(MARK) :])
            return WorkerResult(
                requests=int(data["requests"]),
                errors=int(data["errors"]),
                seconds=float(data["seconds"]),
                cpu_s=float(data["cpu_s"]),
                histogram=Histogram.from_json(data["latency"]),
                error_codes={str(k): int(v) for k, v in data.get("error_codes", {}).items()},
            )
    raise GrpcLoadError(f"worker printed no {MARK.strip()} line:\n{output[-2000:]}")


@dataclass(frozen=True)
class GrpcResult(WrkResult):
    """WrkResult plus what only this generator knows: its own CPU time and the error codes."""

    client_cpu_s: float = 0.0
    error_codes: dict[str, int] | None = None
    generator: str = ""
    """"cpp" (grpc_gen) or "python" (grpc.aio workers)."""

    @property
    def client_cpu_us_per_call(self) -> float:
        return self.client_cpu_s / self.requests * 1e6 if self.requests else 0.0


def merge(results: Sequence[WorkerResult]) -> GrpcResult:
    """Workers ran side by side: add requests and histograms; the run lasted the longest one."""
    if not results:
        raise GrpcLoadError("no worker results to merge")
    histogram = results[0].histogram
    for result in results[1:]:
        histogram = histogram.merge(result.histogram)
    codes: Counter[str] = Counter()
    for result in results:
        codes.update(result.error_codes)
    return GrpcResult(
        requests=sum(r.requests for r in results),
        seconds=max(r.seconds for r in results),
        errors=sum(r.errors for r in results),
        latency_ms=histogram.latency_ms(),
        client_cpu_s=sum(r.cpu_s for r in results),
        error_codes=dict(codes),
    )


def split(concurrency: int, parts: int) -> list[int]:
    """`concurrency` calls over `parts` workers, as evenly as possible, none empty."""
    parts = max(1, min(parts, concurrency))
    return [concurrency // parts + (1 if i < concurrency % parts else 0) for i in range(parts)]
