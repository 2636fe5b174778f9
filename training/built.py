"""What a model-specific builder hands back to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.manifest import Artifacts, Preprocessing, Task
from training.export import GraphSignature


@dataclass
class BuiltModel:
    """The exported artifacts plus everything the manifest and metrics.json record about them."""

    task: Task
    signature: GraphSignature
    preprocessing: Preprocessing
    labels: list[str] | None
    dataset: str
    metrics: dict[str, float]
    parity: dict[str, float]
    artifacts: Artifacts
    epochs: int | None
    notes: list[str] = field(default_factory=list)
    extra_packages: tuple[str, ...] = ()
    """Packages besides the usual ones whose versions go into the provenance."""
    report: dict[str, Any] = field(default_factory=dict)
    """Extra entries for metrics.json (history, timings, confusion matrix)."""
