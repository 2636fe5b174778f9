"""The report's plots: throughput against concurrency, and p99 latency against throughput, one
panel per model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from loadtests.reporting.lookup import models_of, points_of, systems_of
from loadtests.reporting.records import Results

THROUGHPUT_PLOT = "images/bench_throughput.png"
LATENCY_PLOT = "images/bench_latency.png"


def plot(results: Results, docs: Path) -> list[str]:
    """Throughput vs concurrency and p99 vs throughput, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in models_of(results) if any(p.model == m for p in results.points)]
    if not models:
        return []
    (docs / "images").mkdir(parents=True, exist_ok=True)
    systems = systems_of(results)
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(systems)}
    columns = min(2, len(models))
    rows = math.ceil(len(models) / columns)
    written = []
    for name, draw in ((THROUGHPUT_PLOT, draw_throughput), (LATENCY_PLOT, draw_latency)):
        figure, axes = plt.subplots(rows, columns, figsize=(7 * columns, 4.6 * rows), squeeze=False)
        for index, model in enumerate(models):
            draw(axes[index // columns][index % columns], results, model, systems, colors)
        for index in range(len(models), rows * columns):
            axes[index // columns][index % columns].axis("off")
        handles, labels = axes[0][0].get_legend_handles_labels()
        figure.legend(
            handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False
        )
        figure.suptitle(
            f"{results.machine.cpu}, {results.machine.logical_cores} cores, {results.machine.date}",
            fontsize=10,
        )
        figure.tight_layout(rect=(0, 0.08, 1, 0.96))
        figure.savefig(docs / name, dpi=110)
        plt.close(figure)
        written.append(name)
    return written


def draw_throughput(
    axis: Any, results: Results, model: str, systems: list[str], colors: dict[str, Any]
) -> None:
    for system in systems:
        points = points_of(results, system, model)
        if points:
            axis.plot(
                [p.concurrency for p in points],
                [p.throughput for p in points],
                marker="o",
                label=system,
                color=colors[system],
            )
    raw = results.raw.get(model)
    highest = max((p.throughput for p in results.points if p.model == model), default=0.0)
    if raw and raw.limit_items_per_s <= 3 * highest:
        axis.axhline(
            raw.limit_items_per_s,
            color="black",
            linestyle="--",
            linewidth=1,
            label="raw ORT limit",
        )
    elif raw:  # far above every server: say it rather than squash the curves
        axis.text(
            0.02,
            0.96,
            f"raw ORT limit {raw.limit_items_per_s:,.0f} items/s (off scale)",
            transform=axis.transAxes,
            fontsize=8,
            va="top",
        )
    axis.set_xscale("log", base=2)
    axis.set_xticks(results.config.concurrency, [str(c) for c in results.config.concurrency])
    axis.set_title(f"{model}: throughput vs concurrency")
    axis.set_xlabel("concurrent connections")
    axis.set_ylabel("requests / s")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)


def draw_latency(
    axis: Any, results: Results, model: str, systems: list[str], colors: dict[str, Any]
) -> None:
    for system in systems:
        points = points_of(results, system, model)
        if points:
            axis.plot(
                [p.throughput for p in points],
                [p.latency_ms.p99 for p in points],
                marker="o",
                label=system,
                color=colors[system],
            )
    axis.set_yscale("log")
    axis.set_title(f"{model}: p99 latency vs throughput")
    axis.set_xlabel("requests / s")
    axis.set_ylabel("p99 latency (ms)")
    axis.grid(alpha=0.3, which="both")
