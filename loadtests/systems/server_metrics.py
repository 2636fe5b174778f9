"""The gateway's own view of a load test, from two scrapes of `/metrics`.

The difference between a scrape before and one after the test gives, per model version: how
many requests were answered, their mean and estimated p50/p99 server time, the mean time a
request waited in the batch queue, the mean compute time per batch and its parts (input
preparation, the backend call alone, output split, the thread hand-off: absent when the gateway
does not export them), the mean batch size and how many batches of each size bucket formed.
"""

from __future__ import annotations

import math
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

REQUEST = "gateway_request_duration_seconds"
QUEUE = "gateway_queue_duration_seconds"
COMPUTE = "gateway_compute_duration_seconds"
BATCH = "gateway_batch_size"
INPUT = "gateway_batch_input_seconds"
BACKEND = "gateway_batch_backend_seconds"
OUTPUT = "gateway_batch_output_seconds"
HANDOFF = "gateway_batch_handoff_seconds"
HISTOGRAMS = (REQUEST, QUEUE, COMPUTE, BATCH, INPUT, BACKEND, OUTPUT, HANDOFF)

Labels = tuple[tuple[str, str], ...]


@dataclass
class Histogram:
    buckets: dict[float, float] = field(default_factory=dict)
    """Cumulative counts by upper bound (`le`), +Inf included."""
    total: float = 0.0
    count: float = 0.0

    def minus(self, earlier: Histogram | None) -> Histogram:
        if earlier is None:
            return self
        return Histogram(
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.total - earlier.total,
            self.count - earlier.count,
        )

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count > 0 else None

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket, as Prometheus' histogram_quantile does."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for le in sorted(self.buckets):
            cumulative = self.buckets[le]
            if cumulative >= rank:
                if math.isinf(le):
                    return lower_bound
                span = cumulative - lower_count
                fraction = (rank - lower_count) / span if span > 0 else 1.0
                return lower_bound + (le - lower_bound) * fraction
            lower_bound, lower_count = le, cumulative
        return lower_bound


Snapshot = dict[str, dict[Labels, Histogram]]


def parse(text: str) -> Snapshot:
    """The gateway's histograms from Prometheus text format."""
    from prometheus_client.parser import text_string_to_metric_families

    snapshot: Snapshot = {name: defaultdict(Histogram) for name in HISTOGRAMS}
    for family in text_string_to_metric_families(text):
        if family.name not in snapshot:
            continue
        series = snapshot[family.name]
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            key: Labels = tuple(sorted(labels.items()))
            if sample.name.endswith("_bucket"):
                series[key].buckets[float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_sum"):
                series[key].total = sample.value
            elif sample.name.endswith("_count"):
                series[key].count = sample.value
    return {name: dict(series) for name, series in snapshot.items()}


def scrape(base_url: str, token: str | None = None, timeout_s: float = 10.0) -> Snapshot:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(base_url.rstrip("/") + "/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return parse(response.read().decode("utf-8"))


def _model_key(labels: Labels) -> tuple[str, str]:
    found = dict(labels)
    return found.get("model", "?"), found.get("version", "?")


def _merged(series: dict[Labels, Histogram]) -> dict[tuple[str, str], Histogram]:
    """Sum the series of one model version (the request histogram is split by protocol)."""
    merged: dict[tuple[str, str], Histogram] = {}
    for labels, histogram in series.items():
        key = _model_key(labels)
        into = merged.setdefault(key, Histogram())
        for le, n in histogram.buckets.items():
            into.buckets[le] = into.buckets.get(le, 0.0) + n
        into.total += histogram.total
        into.count += histogram.count
    return merged


@dataclass(frozen=True)
class ModelSplit:
    model: str
    version: str
    requests: int
    request_mean_ms: float | None
    request_p50_ms: float | None
    request_p99_ms: float | None
    queue_mean_ms: float | None
    compute_mean_ms: float | None
    """Per batch."""
    batches: int
    mean_batch_size: float | None
    input_mean_ms: float | None = None
    backend_mean_ms: float | None = None
    output_mean_ms: float | None = None
    handoff_mean_ms: float | None = None
    """Per batch; None where the gateway has no such histogram (or ran no batch)."""
    batch_sizes: dict[str, float] = field(default_factory=dict)
    """Batches per `gateway_batch_size` bucket: upper bound in rows ("+Inf" last) -> count."""


def _bucket_counts(histogram: Histogram) -> dict[str, float]:
    """Cumulative bucket counts turned into counts per bucket, empty buckets left out."""
    counts: dict[str, float] = {}
    below = 0.0
    for le in sorted(histogram.buckets):
        n = histogram.buckets[le] - below
        below = histogram.buckets[le]
        if n > 0:
            counts["+Inf" if math.isinf(le) else f"{le:g}"] = n
    return counts


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


def split(before: Snapshot, after: Snapshot) -> list[ModelSplit]:
    """What happened between two scrapes, per model version that did any work."""
    deltas: dict[str, dict[tuple[str, str], Histogram]] = {}
    for name in HISTOGRAMS:
        earlier = _merged(before.get(name, {}))
        deltas[name] = {
            key: h.minus(earlier.get(key)) for key, h in _merged(after.get(name, {})).items()
        }
    keys = sorted({key for series in deltas.values() for key, h in series.items() if h.count > 0})
    rows = []
    for key in keys:
        request, queue, compute, batch, prepare, backend, output, handoff = (
            deltas[name].get(key, Histogram()) for name in HISTOGRAMS
        )
        rows.append(
            ModelSplit(
                model=key[0],
                version=key[1],
                requests=int(request.count),
                request_mean_ms=_ms(request.mean),
                request_p50_ms=_ms(request.quantile(0.5)),
                request_p99_ms=_ms(request.quantile(0.99)),
                queue_mean_ms=_ms(queue.mean),
                compute_mean_ms=_ms(compute.mean),
                batches=int(batch.count),
                mean_batch_size=batch.mean,
                input_mean_ms=_ms(prepare.mean),
                backend_mean_ms=_ms(backend.mean),
                output_mean_ms=_ms(output.mean),
                handoff_mean_ms=_ms(handoff.mean),
                batch_sizes=_bucket_counts(batch),
            )
        )
    return rows
